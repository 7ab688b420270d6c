"""Outcome tables: which action answered each question correctly, and the column -> action mapping.

A row (JSONL, or a JSON list of objects):
`{"id", "question", "choices", "answer", "outcomes": {column: 0|1}, ...metadata}`.
Metadata (task, sub_category, difficulty, ...) is kept for analysis and never used as a feature.
Every problem raises `TableError` with one line: file, line number, problem, fix.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import TableError

BUNDLED_TABLE = Path(__file__).resolve().parent / "data" / "mmau-mini-outcomes-dev.jsonl"
DIRECT = "direct"  # action 0 is always the frozen reasoner answering alone


@dataclass(frozen=True)
class Row:
    id: str
    question: str
    choices: tuple[str, ...]
    answer: str | None
    outcomes: Mapping[str, int]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.metadata.get("task", "all"))


@dataclass(frozen=True)
class OutcomeTable:
    path: str
    rows: tuple[Row, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> list[str]:
        """Every outcome column of the table, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r.outcomes))
        return list(seen)

    def subset(self, indices: Iterable[int]) -> "OutcomeTable":
        rows = tuple(self.rows[i] for i in indices)
        return OutcomeTable(self.path, rows, _rows_sha256(rows))


@dataclass(frozen=True)
class ActionMapping:
    """Maps outcome columns to actions: `direct` plus named tools (`asr=whisper_asr_then_gpt4o`)."""

    direct: str
    tools: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.direct:
            raise ValueError("the direct column is empty; pass --direct COLUMN")
        if not self.tools:
            raise ValueError("no tool column mapped; pass at least one --tool NAME=COLUMN")
        for name in self.tools:
            if name == DIRECT or not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tool action name {name!r} invalid: use letters, digits, '_' or '-', not 'direct'")
        object.__setattr__(self, "tools", dict(self.tools))

    @property
    def actions(self) -> list[str]:
        return [DIRECT, *self.tools]

    @property
    def columns(self) -> list[str]:
        return [self.direct, *self.tools.values()]

    def to_dict(self) -> dict[str, str]:
        return {DIRECT: self.direct, **self.tools}

    @classmethod
    def parse(cls, direct: str, tool_specs: Sequence[str]) -> "ActionMapping":
        """From CLI flags: `--direct COL --tool NAME=COL ...`."""
        tools: dict[str, str] = {}
        for spec in tool_specs:
            name, sep, col = spec.partition("=")
            if not sep or not name.strip() or not col.strip():
                raise ValueError(f"--tool {spec!r} must look like NAME=COLUMN, e.g. --tool asr=whisper_asr_then_gpt4o")
            if name.strip() in tools:
                raise ValueError(f"--tool {name.strip()!r} given twice; give each tool action once")
            tools[name.strip()] = col.strip()
        return cls(direct=direct.strip(), tools=tools)

    def validate(self, table: OutcomeTable) -> None:
        cols = table.columns
        for col in self.columns:
            if col not in cols:
                raise TableError(f"{table.path}: unknown outcome column {col!r}; the table's columns are: "
                                 f"{', '.join(cols)} (fix --direct/--tool)")


# The mapping a user gets without flags on the bundled table (the paper's Qwen2-Audio + ASR pair,
# plus a caption pipeline).
DEFAULT_MAPPING = ActionMapping(direct="qwen2_audio_direct",
                                tools={"asr": "whisper_asr_then_gpt4o", "caption": "qwen2_caption_then_gpt4o"})


def _rows_sha256(rows: Sequence[Row]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.id, r.question, list(r.choices), r.answer, dict(sorted(r.outcomes.items()))],
                            ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def table_sha256(path: str | Path) -> str:
    """sha256 of the table file's bytes (what the router folder records)."""
    p = Path(path)
    if not p.is_file():
        raise TableError(f"{p}: outcome table not found (give the path of a .jsonl file)")
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _parse_row(obj: Any, where: str) -> Row:
    if not isinstance(obj, dict):
        raise TableError(f"{where}: row is {type(obj).__name__}, not an object (each line must be one JSON object)")
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise TableError(f"{where}: missing or empty 'question' (give every row a non-empty question text)")
    outcomes = obj.get("outcomes")
    if not isinstance(outcomes, dict) or not outcomes:
        raise TableError(f"{where}: missing 'outcomes' (add \"outcomes\": {{column: 0 or 1}} to this row)")
    clean: dict[str, int] = {}
    for col, v in outcomes.items():
        if isinstance(v, bool) or v not in (0, 1):
            raise TableError(f"{where}: outcome {col!r} is {v!r}, not 0 or 1 (store 1 if that system answered "
                             f"correctly, else 0)")
        clean[str(col)] = int(v)
    choices = obj.get("choices") or []
    if not isinstance(choices, list):
        raise TableError(f"{where}: 'choices' must be a list of strings")
    rid = obj.get("id")
    meta = {k: v for k, v in obj.items() if k not in ("id", "question", "choices", "answer", "outcomes")}
    return Row(id=str(rid) if rid is not None else "", question=q, choices=tuple(str(c) for c in choices),
               answer=None if obj.get("answer") is None else str(obj["answer"]), outcomes=clean, metadata=meta)


def load_table(path: str | Path, mapping: ActionMapping | None = None) -> OutcomeTable:
    """Load and validate a JSONL (or JSON list) outcome table; with `mapping`, check its columns too."""
    p = Path(path)
    if not p.exists():
        raise TableError(f"{p}: outcome table not found (give the path of a .jsonl file, e.g. {BUNDLED_TABLE.name})")
    if p.is_dir():
        raise TableError(f"{p}: is a folder, not an outcome table (give the path of a .jsonl file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TableError(f"{p}: not UTF-8 text ({exc.reason}); save the table as UTF-8 JSONL") from exc
    items: list[tuple[int, Any]] = []
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableError(f"{p}:{exc.lineno}: bad JSON ({exc.msg}); fix the JSON list or use one object per line") from exc
        items = [(i + 1, o) for i, o in enumerate(data)]
        unit = "item"
    else:
        unit = "line"
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise TableError(f"{p}:{lineno}: bad JSON ({exc.msg}); each line must be one JSON object") from exc
    if not items:
        raise TableError(f"{p}: the table has no rows (add one JSON object per line)")
    rows: list[Row] = []
    seen: dict[str, int] = {}
    wheres: list[str] = []
    for n, obj in items:
        where = f"{p}:{n}" if unit == "line" else f"{p} item {n}"
        row = _parse_row(obj, where)
        if not row.id:
            row = Row(f"row{n}", row.question, row.choices, row.answer, row.outcomes, row.metadata)
        if row.id in seen:
            raise TableError(f"{where}: duplicate id {row.id!r} (first at {unit} {seen[row.id]}); give each row a unique id")
        seen[row.id] = n
        rows.append(row)
        wheres.append(where)
    table = OutcomeTable(str(p), tuple(rows), hashlib.sha256(text.encode("utf-8")).hexdigest())
    if mapping is not None:
        known = set().union(*(r.outcomes for r in rows))
        for col in mapping.columns:
            if col not in known:
                raise TableError(f"{p}: unknown outcome column {col!r}; the table's columns are: "
                                 f"{', '.join(rows[0].outcomes)} (fix --direct/--tool)")
        for row, where in zip(rows, wheres):
            for col in mapping.columns:
                if col not in row.outcomes:
                    raise TableError(f"{where}: missing outcome for mapped column {col!r} (add it to this row's "
                                     f"outcomes or map another column)")
    return table


def outcome_matrix(table: OutcomeTable, mapping: ActionMapping):
    """int8 array [N, A]: 1 where action a (in `mapping.actions` order) answered row i correctly."""
    import numpy as np

    cols = mapping.columns
    return np.array([[r.outcomes[c] for c in cols] for r in table.rows], dtype=np.int8)


def texts(table: OutcomeTable) -> list[str]:
    """The router input of every row (question + choices only, never metadata)."""
    from .text import format_input

    return [format_input(r.question, r.choices) for r in table.rows]
