"""What the resumable loops of `collect` and `batch` share.

Durable output (an append-only JSONL file whose rows are flushed + fsync'd one by one, so a re-run
skips ids already written; JSON written atomically), the guard that stops a run when the reasoner
server looks down, the run summary, the per-row audio check and answer scoring.
"""
from __future__ import annotations

import itertools
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
    acknowledged, so it is recomputed. Every complete line is kept. With `keep_rows=True` the
    existing rows are read into `rows`; with False nothing is held in memory: `iter_rows()` streams
    the file (with each line's byte offset) and `read_at(offset)` reads one row back.
    """

    def __init__(self, path: str | Path, keep_rows: bool = True):
        self.path = Path(path)
        self.keep_rows = keep_rows
        self.rows: list[dict] = []
        if self.path.exists():
            _cut_torn_tail(self.path)
            if keep_rows:
                self.rows = [row for _, row in self.iter_rows()]
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")

    def iter_rows(self):
        """(byte offset, row) for every complete line already in the file, in file order."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            offset, lineno = 0, 0
            for raw in fh:
                lineno += 1
                here, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                try:
                    yield here, json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise PipelineError(f"{self.path} line {lineno} is not valid JSON; fix or delete that "
                                        "line (or the file) and re-run") from None

    def read_at(self, offset: int) -> dict:
        """The row whose line starts at `offset` (from iter_rows or write)."""
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            return json.loads(fh.readline())

    def write(self, row: Mapping[str, Any]) -> int:
        """Append one row durably; returns the byte offset its line starts at."""
        offset = self._fh.seek(0, os.SEEK_END)
        self._fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if self.keep_rows:
            self.rows.append(dict(row))
        return offset

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(path: Path) -> None:
    """Truncate a last line that has no newline (a write cut short by a kill); reads only the tail."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size
        while pos > 0:  # scan back in 64 KiB blocks for the last newline
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                fh.truncate(pos - step + nl + 1)
                return
            pos -= step
        fh.truncate(0)


class JsonListWriter:
    """A JSON list written row by row to a temp file, renamed over `path` on `commit()` (atomic:
    readers see the old file or the complete new one). One row per line, so it can be read back
    line by line (`iter_json_list`) without holding the list in memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._fh = open(self._tmp, "w", encoding="utf-8")
        self._fh.write("[")
        self._count = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._fh.write(("\n" if not self._count else ",\n") + json.dumps(row, ensure_ascii=False))
        self._count += 1

    def commit(self) -> None:
        self._fh.write("\n]\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


def iter_json_list(path: str | Path):
    """Rows of a JSON list file: streamed line by line when written by JsonListWriter (one row per
    line), else parsed whole (a list written by another program or an older version)."""
    path = Path(path)
    with open(path, "r", encoding="utf-8") as fh:
        first, second = fh.readline(), fh.readline()
        ours = False
        if first.strip() == "[":
            try:
                ours = second.strip() == "]" or isinstance(json.loads(second.strip().rstrip(",")), dict)
            except json.JSONDecodeError:
                ours = False
        if ours:
            lineno = 2
            for line in itertools.chain([second], fh):
                text = line.strip().rstrip(",")
                if text and text != "]":
                    try:
                        yield json.loads(text)
                    except json.JSONDecodeError:
                        raise PipelineError(f"{path} line {lineno} is not valid JSON; choose another --out "
                                            "or delete it") from None
                lineno += 1
            return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path} is not valid JSON ({exc.msg}); choose another --out or delete it") from None
    if not isinstance(data, list):
        raise PipelineError(f"{path} is not a JSON list of rows; choose another --out or delete it")
    yield from data


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
    cache_note: str | None = None   # one line saying whose cached answers were served (None: none)


def audio_or_error(q: Question) -> tuple[str | None, str | None]:
    """(sha256, None) when the row's clip is usable, else (None, error message)."""
    from toolcache.errors import ToolcacheError

    if q.error:
        return None, q.error
    try:
        return check_audio(q.audio), None
    except ToolcacheError as exc:
        return None, f"row {q.id}: {exc}"
