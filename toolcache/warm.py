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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from toolcache.audio import AUDIO_SUFFIXES, default_max_seconds, validate_max_seconds
from toolcache.errors import ToolcacheError

AUDIO_FIELD = "audio"


@dataclass(frozen=True)
class AudioSources:
    """What a warm source names: the audio files that exist (deduplicated, stable order) and the
    dataset paths that do not (warmed around, listed at the end)."""

    files: tuple[Path, ...]
    missing: tuple[str, ...] = ()


def collect_audio(source: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> list[Path]:
    """The audio files named by `source`; ToolcacheError if any dataset path is missing (strict form
    of `find_audio`, which returns the missing ones instead)."""
    found = find_audio(source, audio_root)
    if found.missing:
        raise ToolcacheError(missing_message(source, found, audio_root))
    return list(found.files)


def missing_message(source, found: AudioSources, audio_root) -> str:
    """`<n> of <m> audio files named in X are missing (first: ...); <fix>`: the fix names --audio-root
    only when it was not given (when it was, the paths or that folder are what to check)."""
    n_all = len(found.files) + len(found.missing)
    problem = (f"{len(found.missing)} of {n_all} audio files named in {Path(source).expanduser()} are missing "
               f"(first: {found.missing[0]})")
    if audio_root is None:
        fix = "pass --audio-root FOLDER if the paths are relative to another folder than the dataset's"
    else:
        fix = (f"check that those files exist under --audio-root {Path(audio_root).expanduser()} "
               f"(the paths in the dataset are joined to it)")
    if found.files:
        fix += f"; the other {len(found.files)} were warmed, re-run after fixing to add the missing ones"
    return f"{problem}; {fix}"


def find_audio(source: str | os.PathLike, audio_root: str | os.PathLike | None = None) -> AudioSources:
    """The audio files named by `source` and the dataset paths that do not exist.

    Raises ToolcacheError for a missing source, a folder with no audio, a dataset row without an
    `audio` field, or a dataset none of whose paths exist (nothing to warm).
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
        return AudioSources(tuple(files))
    if src.suffix.lower() in AUDIO_SUFFIXES:
        return AudioSources((src,))
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
        if p.is_file():
            out.append(p)
        else:
            missing.append(str(p))
    if not out and not missing:
        raise ToolcacheError(f"{src} has no rows; it needs one JSON object per line with an '{AUDIO_FIELD}' field")
    found = AudioSources(tuple(out), tuple(missing))
    if not out:  # nothing at all to warm: that is an error, not a summary
        raise ToolcacheError(missing_message(src, found, audio_root))
    return found


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


SKIPPED = "skipped"                 # status of an output not attempted because warm stopped
MIN_FILES_PER_WORKER = 8            # files a worker process must have to pay back its start-up
WATCHDOG_PERIOD_S = 0.5             # how often a worker checks that its parent is still alive

_STOP = None                        # in a worker: the pool's shared "stop now" event (multiprocessing)


class WarmStopped(ToolcacheError):
    """Warm stopped at the first cache error (read-only, disk full, corrupt): nothing more could be
    stored. `.summary` is the warm summary up to that point (what was stored is true)."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def warm_file(path: str, tools: Sequence[str], max_seconds: float,
              params_by_tool: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """Compute-or-skip every tool on one file. Returns {path, status{tool: computed|cached|failed|
    skipped}, keys{tool: cache key of what is stored}, errors{tool: message}, warnings[str],
    cache_error (message or None), elapsed_s}.

    Never raises for a bad file or a failing tool (the batch keeps going); bad arguments still
    raise. A cache error (cannot read or store) ends the file at once: `cache_error` says why, the
    tools not done are "skipped", and the caller stops the whole warm.
    """
    from toolcache.api import key_for, resolve_params, run_many
    from toolcache.cache import CacheError
    from toolcache.registry import get_tool

    t0 = time.perf_counter()
    status: dict[str, str] = {}
    keys: dict[str, str] = {}
    errors: dict[str, str] = {}
    warnings: list[str] = []
    cache_error = None
    if _STOP is not None and _STOP.is_set():  # another worker hit a cache error: do not compute
        out: dict = {}
    else:
        try:
            out = run_many(tools, path, params_by_tool, cache=True, max_seconds=max_seconds, raise_errors=False)
        except CacheError as exc:  # the cache cannot be read (before anything was computed)
            out = {t: exc for t in tools}
        except ToolcacheError as exc:  # the file itself is bad (missing, empty, not audio)
            out = {t: exc for t in tools}
    for tool in tools:
        env = out.get(tool)
        if env is None:
            status[tool] = SKIPPED
            continue
        if isinstance(env, Exception):
            status[tool] = "failed"
            errors[tool] = " ".join(str(env).split())
            if isinstance(env, CacheError) and cache_error is None:
                cache_error = errors[tool]
            continue
        status[tool] = "cached" if env["cached"] else "computed"
        spec = get_tool(tool)
        keys[tool] = key_for(spec, env["audio_sha256"], resolve_params(spec, env["params"]), max_seconds)[0]
        note = header_warning(env)
        if note and note not in warnings:
            warnings.append(note)
    if cache_error is not None and _STOP is not None:
        _STOP.set()  # tell the other workers at once, not after the parent reads this result
    return {"path": str(path), "status": status, "keys": keys, "errors": errors, "warnings": warnings,
            "cache_error": cache_error, "elapsed_s": round(time.perf_counter() - t0, 6)}


def header_warning(env: Mapping[str, Any]) -> str | None:
    """One line when the envelope says the file holds less audio than its header announces."""
    a = env.get("audio") or {}
    if not a.get("header_mismatch"):
        return None
    return (f"the file is shorter than its header says ({a.get('original_duration_s', 0):.2f} s of audio, "
            f"header {a.get('header_duration_s', 0):.2f} s): it is incomplete (cut download or copy); "
            f"only what it holds was analysed")


# ------------------------------------------------------------------ worker processes
def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the warm process dies, even by SIGKILL (no cleanup runs then).

    Linux: prctl(PR_SET_PDEATHSIG, SIGKILL) has the kernel kill us when the parent goes. Everywhere
    (and in case prctl is unavailable): a daemon thread polls getppid() every WATCHDOG_PERIOD_S and
    exits when we have been re-parented. The check after prctl closes the race where the parent
    died before the call.
    """
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent_pid:
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            if os.getppid() != parent_pid:
                os._exit(1)  # parent gone: nothing to report to; committed outputs are safe

    threading.Thread(target=watchdog, name="warm-parent-watchdog", daemon=True).start()


def _cpu_slice(index: int, workers: int) -> set[int] | None:
    """The cores worker `index` of `workers` is pinned to: a disjoint slice of the cores this process
    may use (round-robin single cores when there are more workers than cores). Pinned, each
    worker's own thread pools (CTranslate2 and onnxruntime size them by os.cpu_count()) stay on its
    slice instead of every worker's threads contending for every core. Measured on 2 cores, 40 clips
    (bench/bench_warm.py): pinned workers that keep their tools' thread counts beat both unpinned
    workers and pinned workers forced to one thread per tool.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if workers <= 1 or len(cores) <= 1:
        return None
    if workers >= len(cores):
        return {cores[index % len(cores)]}
    lo, hi = index * len(cores) // workers, (index + 1) * len(cores) // workers
    return set(cores[lo:hi])


def _init_worker(parent_pid: int, stop, counter, workers: int) -> None:
    """Worker start-up: die with the parent, share the stop event, pin to a slice of the cores, one
    BLAS/OpenMP thread and no OpenMP busy-waiting (other workers need the cores)."""
    global _STOP
    _die_with_parent(parent_pid)
    _STOP = stop
    for var, value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                       ("NUMBA_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE"), ("KMP_BLOCKTIME", "0")):
        os.environ.setdefault(var, value)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = _cpu_slice(index, workers)
    if cores:
        try:
            os.sched_setaffinity(0, cores)
        except OSError:
            pass  # a restricted container: run unpinned


def check_warm_args(tools: Sequence[str], workers: int | None) -> int:
    """Fail before any work on unknown tools or a bad worker count; returns the worker count asked
    for (default: every core)."""
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


def workers_for(n_files: int, asked: int) -> int:
    """Processes worth starting for `n_files`: each must get MIN_FILES_PER_WORKER files, because a
    worker pays ~2-3 s of start-up (interpreter, imports, model loads) before its first file, and
    never more than the cores (the tools are CPU-bound). One means: warm in this process."""
    n_cpu = os.cpu_count() or 1
    return max(1, min(int(asked), n_cpu, n_files // MIN_FILES_PER_WORKER))


def warm(files: Sequence[str | os.PathLike], tools: Sequence[str], workers: int | None = None,
         max_seconds: float | None = None, params_by_tool: Mapping[str, Mapping[str, Any]] | None = None,
         on_file: Callable[[dict], None] | None = None) -> dict:
    """Warm the cache for `files` x `tools` on up to `workers` processes (default: all cores; fewer
    for a small job, see `workers_for`).

    `on_file(result)` is called in this process after each file's outputs are committed
    (result as returned by `warm_file`). Returns a summary dict. Stops at the first cache error
    (nothing more could be stored) with WarmStopped, whose `.summary` counts what was stored.
    """
    asked = check_warm_args(tools, workers)
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    paths = [str(f) for f in files]
    n_workers = workers_for(len(paths), asked)
    t0 = time.perf_counter()
    counts = {"computed": 0, "cached": 0, "failed": 0, SKIPPED: 0}
    failures: list[dict] = []
    warnings: list[dict] = []
    stopped: list[tuple[str, str]] = []  # (path, cache error) of the first cache error
    done_files: set[str] = set()

    def record(res: dict) -> None:
        done_files.add(res["path"])
        for tool, st in res["status"].items():
            if st == "failed" and res.get("cache_error") is not None and res["errors"].get(tool) == res["cache_error"]:
                st = res["status"][tool] = SKIPPED  # not a fault of the file: the cache refused it
            counts[st] += 1
            if st == "failed":
                failures.append({"path": res["path"], "tool": tool, "error": res["errors"][tool]})
        for w in res.get("warnings") or ():
            warnings.append({"path": res["path"], "warning": w})
        if res.get("cache_error") and not stopped:
            stopped.append((res["path"], res["cache_error"]))
        if on_file is not None:
            on_file(res)

    if n_workers == 1:
        for p in paths:
            record(warm_file(p, list(tools), limit, params_by_tool))
            if stopped:
                break
    else:
        _pool_warm(paths, list(tools), limit, params_by_tool, n_workers, record, lambda: bool(stopped))
    counts[SKIPPED] += len(tools) * (len(paths) - len(done_files))  # files never attempted
    summary = {
        "files": len(paths),
        "tools": list(tools),
        "workers": n_workers,
        "workers_asked": asked,
        **counts,
        "failures": failures,
        "warnings": warnings,
        "stopped": stopped[0][1] if stopped else None,
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    if stopped:
        path, error = stopped[0]
        total = len(paths) * len(tools)
        raise WarmStopped(
            f"warm stopped at the first cache error, on {path} ({counts['computed']} new tool outputs stored, "
            f"{counts['cached']} already cached, {counts[SKIPPED]} of {total} not stored; re-run to resume "
            f"once the cache can be written): {error}",
            summary,
        )
    return summary


def _pool_warm(paths, tools, limit, params_by_tool, workers, record, should_stop) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: the parent may hold an SQLite connection and library threads.
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    counter = ctx.Value("i", 0)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(), stop, counter, workers))
    pending = iter(paths)
    in_flight = set()
    try:
        # Keep a small window in flight: enough to keep every worker busy, few enough that a stop
        # (cache error) leaves little queued work (queued files are then skipped, not computed).
        for p in pending:
            in_flight.add(pool.submit(warm_file, p, tools, limit, params_by_tool))
            if len(in_flight) >= 2 * workers:
                break
        while in_flight:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for fut in done:
                if fut.cancelled():
                    continue
                record(fut.result())
                if should_stop():
                    stop.set()
                    for f in in_flight:
                        f.cancel()
                    continue
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
