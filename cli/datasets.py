"""Question datasets for `collect` and `batch`: MMAU-style, MMAR-style and our own JSONL.

A format is a plain entry in `FORMATS` (name -> DatasetFormat) that knows how to recognise a row
and which keys hold the audio path, the task label and the answer. `load_dataset` reads a JSON list
or a JSONL file, auto-detects the format from the first rows (or takes `fmt=`), and returns
`Question` objects with the audio path resolved against `audio_root` (default: the dataset file's
folder). A row that cannot be used (no choices, no question) becomes a Question with `error` set,
so the caller records an error row and keeps going instead of stopping the whole run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


class DatasetError(ValueError):
    """The dataset file is missing, unreadable, or not one of the known formats (one line + fix)."""


@dataclass(frozen=True)
class DatasetFormat:
    """Where one dataset family keeps its fields."""

    name: str
    description: str
    audio_key: str          # key holding the audio path (relative to the audio root, or absolute)
    group_key: str          # key used for per-group accuracy (task / category)
    signature: tuple[str, ...]  # keys every row of this format carries (choices may be missing: error row)


FORMATS: dict[str, DatasetFormat] = {
    "mmau": DatasetFormat(
        name="mmau",
        description="MMAU JSON list: {id, audio_id, question, choices, answer, task, sub-category, ...}",
        audio_key="audio_id", group_key="task", signature=("audio_id", "question"),
    ),
    "mmar": DatasetFormat(
        name="mmar",
        description="MMAR JSON/JSONL: {id, audio_path, question, choices, answer, category, ...}",
        audio_key="audio_path", group_key="category", signature=("audio_path", "question"),
    ),
    "jsonl": DatasetFormat(
        name="jsonl",
        description="audiorouter JSONL: {id, audio, question, choices, answer?, task?}",
        audio_key="audio", group_key="task", signature=("audio", "question"),
    ),
}


def available_formats() -> list[str]:
    """Names of every dataset format, in detection order."""
    return list(FORMATS)


@dataclass(frozen=True)
class Question:
    """One dataset row, normalised. `row` is the untouched original (written back by `batch`)."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str | None
    audio: str                      # resolved path (may not exist: checked when the row runs)
    group: str | None               # task (MMAU, ours) or category (MMAR), for per-group accuracy
    row: Mapping[str, Any] = field(repr=False)
    error: str | None = None        # set when the row itself is unusable (e.g. no choices)


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: str
    questions: tuple[Question, ...]
    container: str                  # "json" (a JSON list) or "jsonl"

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def has_answers(self) -> bool:
        return any(q.answer is not None for q in self.questions)


def _read_rows(path: Path) -> tuple[list[dict], str]:
    """Rows of a JSON list (or {"data": [...]}) or of a JSONL file; DatasetError names the line."""
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist (check the path)")
    if path.is_dir():
        raise DatasetError(f"dataset {path} is a directory (pass the .json/.jsonl file inside it)")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DatasetError(f"dataset {path} is empty (expected a JSON list or JSON lines of questions)")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"dataset {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                               "fix the file or convert it to JSON lines") from None
        container = "json"
    else:
        rows, container = [], "jsonl"
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if lineno == 1 and stripped.startswith("{"):
                    try:  # a single JSON object wrapping the list, e.g. {"data": [...]}
                        obj = json.loads(text)
                        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                            return obj["data"], "json"
                    except json.JSONDecodeError:
                        pass
                raise DatasetError(f"dataset {path} line {lineno} is not valid JSON ({exc.msg}); "
                                   "fix or remove that line") from None
    if not isinstance(rows, list):
        raise DatasetError(f"dataset {path} holds a JSON {type(rows).__name__}, expected a list of questions")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"dataset {path} entry {i + 1} is a {type(row).__name__}, expected an object "
                               "with question/choices/audio keys")
    return rows, container


def detect_format(rows: Sequence[Mapping[str, Any]], path: Path | str = "dataset") -> str:
    """The first format whose signature keys the first rows carry (DatasetError if none)."""
    sample = list(rows[:20])
    for name, fmt in FORMATS.items():
        if sample and all(all(k in row for k in fmt.signature) for row in sample):
            return name
    keys = sorted(set().union(*(row.keys() for row in sample))) if sample else []
    expected = "; ".join(f"{f.name}: {', '.join(f.signature)}" for f in FORMATS.values())
    raise DatasetError(f"cannot tell the format of {path} (keys found: {', '.join(keys) or 'none'}); "
                       f"expected the keys of one of: {expected}")


def _clean_choices(raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):  # some dumps store choices as a JSON string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    if not isinstance(raw, (list, tuple)):
        return None
    return tuple(str(c) for c in raw)


def _resolve_audio(value: Any, root: Path) -> str:
    if value is None or str(value).strip() == "":
        return ""
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (root / p))


def load_dataset(path: str | Path, fmt: str | None = None, audio_root: str | Path | None = None,
                 limit: int | None = None) -> Dataset:
    """Read a dataset file; `fmt` None auto-detects; `audio_root` defaults to the file's folder."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; available formats: {', '.join(FORMATS)}")
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be >= 1 (got {limit})")
    rows, container = _read_rows(path)
    if not rows:
        raise DatasetError(f"dataset {path} holds no questions (add rows or check the file)")
    name = fmt or detect_format(rows, path)
    spec = FORMATS[name]
    root = Path(audio_root).expanduser().resolve() if audio_root is not None else path.resolve().parent
    if audio_root is not None and not root.is_dir():
        raise DatasetError(f"--audio-root {root} is not a directory (pass the folder holding the clips)")
    if limit is not None:
        rows = rows[:limit]
    questions, seen = [], set()
    for i, row in enumerate(rows):
        qid = str(row.get("id", "")).strip() or f"row{i + 1}"
        if qid in seen:
            raise DatasetError(f"dataset {path} has a duplicate id {qid!r} (entry {i + 1}); "
                               "ids must be unique because resuming skips rows by id")
        seen.add(qid)
        question = str(row.get("question") or "").strip()
        choices = _clean_choices(row.get("choices"))
        answer = row.get("answer")
        error = None
        if not question:
            error = f"row {qid}: empty question (fill in the question text)"
        elif not choices:
            error = f"row {qid}: missing or empty choices (add a non-empty 'choices' list)"
        audio = _resolve_audio(row.get(spec.audio_key), root)
        if error is None and not audio:
            error = f"row {qid}: no audio path in '{spec.audio_key}' (add the clip's path)"
        group = row.get(spec.group_key)
        questions.append(Question(
            id=qid, question=question, choices=choices or (), answer=None if answer is None else str(answer),
            audio=audio, group=None if group is None else str(group), row=row, error=error,
        ))
    return Dataset(path=path, format=name, questions=tuple(questions), container=container)
