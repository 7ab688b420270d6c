"""Precompute tool outputs for many clips (`audiorouter cache warm`), resumably, on a process pool.

Resumable by construction: each (file, tool) output is committed to the cache in its own
transaction as soon as it is computed, and a re-run finds it there and skips it. A killed warm
loses only the outputs being computed at that moment.

Sources: a folder (recursive *.wav/*.flac/*.mp3/*.ogg), a single audio file, or a JSONL/JSON
dataset whose rows carry an `audio` path (relative to the dataset file, or to `audio_root`).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from toolcache.audio import AUDIO_SUFFIXES, default_max_seconds, validate_max_seconds
from toolcache.errors import ToolcacheError

AUDIO_FIELD = "audio"


def collect_audio(source: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> list[Path]:
    """The audio files named by `source`, deduplicated, in a stable order.

    Raises ToolcacheError for a missing source, a folder with no audio, a dataset row without an
    `audio` field, or dataset paths that do not exist (naming how many and the first one).
    """
    src = Path(source).expanduser()
    if not src.exists():
        raise ToolcacheError(f"{src} does not exist; pass a folder of audio files or a JSONL/JSON dataset file")
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ToolcacheError(
                f"no audio files ({', '.join('*' + s for s in AUDIO_SUFFIXES)}) under {src}; "
                f"point to a folder of audio or a JSONL/JSON file with an '{AUDIO_FIELD}' field per row"
            )
        return files
    if src.suffix.lower() in AUDIO_SUFFIXES:
        return [src]
    if src.suffix.lower() not in (".jsonl", ".json"):
        raise ToolcacheError(
            f"{src} is neither a folder, an audio file nor a .jsonl/.json dataset; "
            f"pass a folder of audio or a JSONL/JSON file with an '{AUDIO_FIELD}' field per row"
        )
    root = Path(audio_root).expanduser() if audio_root is not None else src.parent
    if audio_root is not None and not root.is_dir():
        raise ToolcacheError(f"--audio-root {root} is not a folder; pass the folder the dataset's audio paths are relative to")
    out: list[Path] = []
    seen: set[Path] = set()
    missing: list[str] = []
    for where, row in _dataset_rows(src):
        if not isinstance(row, dict) or not isinstance(row.get(AUDIO_FIELD), str) or not row[AUDIO_FIELD]:
            raise ToolcacheError(
                f"{src} {where} has no '{AUDIO_FIELD}' field (a path string); "
                f"every row needs one, e.g. {{\"{AUDIO_FIELD}\": \"clips/q1.wav\", ...}}"
            )
        p = Path(row[AUDIO_FIELD]).expanduser()
        if not p.is_absolute():
            p = root / p
        if p in seen:
            continue
        seen.add(p)
        if not p.is_file():
            missing.append(str(p))
        out.append(p)
    if missing:
        raise ToolcacheError(
            f"{len(missing)} of {len(out)} audio files named in {src} are missing (first: {missing[0]}); "
            f"pass --audio-root FOLDER if paths are relative to another folder"
        )
    if not out:
        raise ToolcacheError(f"{src} has no rows; it needs one JSON object per line with an '{AUDIO_FIELD}' field")
    return out


def _dataset_rows(src: Path) -> Iterable[tuple[str, Any]]:
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ToolcacheError(f"{src} is not UTF-8 text; pass a JSONL/JSON dataset file") from None
    if src.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                yield f"line {n}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise ToolcacheError(f"{src} line {n} is not valid JSON ({exc.msg}); fix or remove that line") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolcacheError(f"{src} is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file") from None
    if isinstance(data, dict):
        for field in ("rows", "data", "items", "examples"):
            if isinstance(data.get(field), list):
                data = data[field]
                break
    if not isinstance(data, list):
        raise ToolcacheError(f"{src} must hold a JSON list of rows (or {{\"rows\": [...]}}), each with an '{AUDIO_FIELD}' field")
    for n, row in enumerate(data):
        yield f"row {n}", row


def warm_file(path: str, tools: Sequence[str], max_seconds: float,
              params_by_tool: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """Compute-or-skip every tool on one file. Returns {path, status{tool: computed|cached|failed},
    keys{tool: cache key of what is stored}, errors{tool: message}, elapsed_s}. Never raises for a
    bad file or a failing tool (the batch keeps going); bad arguments still raise."""
    from toolcache.api import key_for, resolve_params, run_many
    from toolcache.registry import get_tool

    t0 = time.perf_counter()
    status: dict[str, str] = {}
    keys: dict[str, str] = {}
    errors: dict[str, str] = {}
    try:
        out = run_many(tools, path, params_by_tool, cache=True, max_seconds=max_seconds, raise_errors=False)
    except ToolcacheError as exc:  # the file itself is bad (missing, empty, not audio)
        out = {t: exc for t in tools}
    for tool, env in out.items():
        if isinstance(env, Exception):
            status[tool] = "failed"
            errors[tool] = " ".join(str(env).split())
            continue
        status[tool] = "cached" if env["cached"] else "computed"
        spec = get_tool(tool)
        keys[tool] = key_for(spec, env["audio_sha256"], resolve_params(spec, env["params"]), max_seconds)[0]
    return {"path": str(path), "status": status, "keys": keys, "errors": errors,
            "elapsed_s": round(time.perf_counter() - t0, 6)}


def _init_worker() -> None:
    """One BLAS/OpenMP thread per worker process: the pool already uses every core."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def check_warm_args(tools: Sequence[str], workers: int | None) -> int:
    """Fail before any work on unknown tools or a bad worker count; returns the worker count."""
    from toolcache.registry import get_tool

    if not tools:
        raise ValueError("no tools to warm; pass --tools NAME[,NAME...] (see `audiorouter tools list`)")
    for t in tools:
        get_tool(t)
    n_cpu = os.cpu_count() or 1
    if workers is None:
        return n_cpu
    if int(workers) < 1:
        raise ValueError(f"workers={workers!r} must be at least 1 (this machine has {n_cpu} cores)")
    return int(workers)


def warm(files: Sequence[str | os.PathLike], tools: Sequence[str], workers: int | None = None,
         max_seconds: float | None = None, params_by_tool: Mapping[str, Mapping[str, Any]] | None = None,
         on_file: Callable[[dict], None] | None = None) -> dict:
    """Warm the cache for `files` x `tools` on `workers` processes (default: all cores).

    `on_file(result)` is called in this process after each file's outputs are committed
    (result as returned by `warm_file`). Returns a summary dict.
    """
    workers = check_warm_args(tools, workers)
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    paths = [str(f) for f in files]
    workers = max(1, min(int(workers), len(paths)))
    t0 = time.perf_counter()
    counts = {"computed": 0, "cached": 0, "failed": 0}
    failures: list[dict] = []

    def record(res: dict) -> None:
        for tool, st in res["status"].items():
            counts[st] += 1
            if st == "failed":
                failures.append({"path": res["path"], "tool": tool, "error": res["errors"][tool]})
        if on_file is not None:
            on_file(res)

    if workers == 1:
        for p in paths:
            record(warm_file(p, list(tools), limit, params_by_tool))
    else:
        _pool_warm(paths, list(tools), limit, params_by_tool, workers, record)
    return {
        "files": len(paths),
        "tools": list(tools),
        "workers": workers,
        **counts,
        "failures": failures,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }


def _pool_warm(paths, tools, limit, params_by_tool, workers, record) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the parent may hold an SQLite connection and library threads.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    pending = iter(paths)
    in_flight = set()
    try:
        # Keep a bounded window in flight so a huge dataset does not queue millions of futures.
        for p in pending:
            in_flight.add(pool.submit(warm_file, p, tools, limit, params_by_tool))
            if len(in_flight) >= 4 * workers:
                break
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                record(fut.result())
                nxt = next(pending, None)
                if nxt is not None:
                    in_flight.add(pool.submit(warm_file, nxt, tools, limit, params_by_tool))
    except BrokenProcessPool:
        raise ToolcacheError(
            "a warm worker process died (out of memory or killed); everything finished so far is "
            "cached: re-run the same command to resume, with fewer --workers if memory is short"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
