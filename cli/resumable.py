"""What the resumable loops of `collect` and `batch` share.

Durable output (an append-only JSONL file whose rows are flushed + fsync'd one by one, so a re-run
skips ids already written; JSON written atomically), the guard that stops a run when the reasoner
server looks down, the run summary, the per-row audio check and answer scoring.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cli.datasets import Question
from cli.pipeline import PipelineError, check_audio

DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
DEFAULT_CHUNK = 8  # questions whose reasoner requests `batch` sends together


class JsonlAppender:
    """Append-only JSONL: one row per line, flushed and fsync'd before `write` returns.

    On open, a torn last line (the process was killed mid-write) is cut off: that row was never
    acknowledged, so it is recomputed. Every complete line is kept.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with open(self.path, "r+b") as fh:
                    fh.truncate(cut)
                data = data[:cut]
            for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise PipelineError(f"{self.path} line {lineno} is not valid JSON; fix or delete that "
                                        "line (or the file) and re-run") from None
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.append(dict(row))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def is_correct(choice: str | None, answer: str | None) -> bool:
    if choice is None or answer is None:
        return False
    return " ".join(str(choice).split()).casefold() == " ".join(str(answer).split()).casefold()


class FailureGuard:
    """Counts consecutive reasoner failures; stops the run at `limit` (ReasonerUnavailable).

    A connection failure before any success is not a flaky question but a wrong URL / a server
    that is down: it stops at once (exit 3 with the URL) instead of failing every row.
    """

    def __init__(self, limit: int = DEFAULT_MAX_CONSECUTIVE_FAILURES):
        if limit < 1:
            raise ValueError(f"--max-failures must be >= 1 (got {limit})")
        self.limit = limit
        self.consecutive = 0
        self.successes = 0

    def ok(self) -> None:
        self.consecutive = 0
        self.successes += 1

    def failed(self, exc: BaseException) -> None:
        from reasoner.errors import ReasonerTimeout, ReasonerUnavailable

        self.consecutive += 1
        if self.successes == 0 and not isinstance(exc, ReasonerTimeout):
            raise exc
        if self.consecutive >= self.limit:
            line = " ".join(str(exc).split())
            raise ReasonerUnavailable(
                f"stopped after {self.consecutive} consecutive reasoner failures (last: {line}); "
                "every row written so far is kept: fix the server (or raise --timeout) and re-run "
                "the same command to resume")


@dataclass
class RunSummary:
    total: int = 0
    skipped_done: int = 0           # already in the output from an earlier run
    processed: int = 0              # rows handled in this run (incl. errors)
    errors: int = 0                 # error rows (missing audio, no choices, reasoner timeout...)
    unmatched: dict[str, int] = field(default_factory=dict)   # per action: answers matching no choice
    server_calls: int = 0           # reasoner requests made (cache misses)
    cache_hits: int = 0             # reasoner answers served from the cache


def audio_or_error(q: Question) -> tuple[str | None, str | None]:
    """(sha256, None) when the row's clip is usable, else (None, error message)."""
    from toolcache.errors import ToolcacheError

    if q.error:
        return None, q.error
    try:
        return check_audio(q.audio), None
    except ToolcacheError as exc:
        return None, f"row {q.id}: {exc}"
