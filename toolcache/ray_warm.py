"""`cache warm --engine ray`: tool extraction on a Ray cluster (Ray Data actor pools, one per tool).

    clip list --> [ToolActor(asr)  x N] --> [ToolActor(chords) x N] --> ... --> driver
                  hash + key + skip          key + skip                          commit to the local
                  + compute                  + compute                           cache and/or Parquet

Each tool runs in its own actor pool (`map_batches` with a stateful class): the model loads once
per actor, and each pool asks for its own resources (TOOL_RESOURCES: CPUs, GPUs per actor). Keys are
the local path's keys (toolcache.api.key_for on the file's sha256), envelopes are built by the same
code (toolcache.api), so a Ray-warmed cache answers exactly like a process-pool-warmed one.

Resumable: outputs are committed by the driver every `commit_every` outputs (or COMMIT_EVERY_S
seconds), to the local cache in one transaction and/or as one Parquet part file written
atomically (temp + rename). Before starting, the driver collects the keys that already landed
(local cache keys and the key column of the Parquet folder) and hands them to the actors, which
skip those (tool, clip) pairs without decoding. A killed job loses only the outputs not yet
committed.

Pools: each has 1 to `actors` actors (Ray Data scales them), so several tools share the CPUs of a
small cluster instead of one fixed pool waiting for the other to finish. pools="shared" runs every
tool in one pool instead (one decode per clip and sample rate, as the process pool does).

Envelopes are built by toolcache.api.compute_envelope, the function run_many uses, on audio decoded by
toolcache.audio.load_audio: nothing is stored on the workers (their nodes' caches stay untouched).

Files must be readable at the same path on every node (shared file system or a local copy).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from toolcache.errors import ToolcacheError

# The warm engines `cache warm --engine` offers (name -> what it is).
ENGINES: dict[str, str] = {
    "local": "process pool on this machine (toolcache.warm)",
    "ray": "Ray Data actor pools, one per tool, on a local runtime or a cluster (toolcache.ray_warm)",
}

# Resources one actor of a tool asks Ray for. GPU-capable tools get `gpus` (RayWarmOptions) GPUs
# per actor. None is GPU-capable today: every tool computes on the CPU (asr loads faster-whisper
# with device="cpu"); a tool that gains a CUDA path sets gpu_capable here, nothing else changes.
TOOL_RESOURCES: dict[str, dict[str, Any]] = {
    "asr": {"num_cpus": 1.0, "gpu_capable": False},
    "speakers": {"num_cpus": 1.0, "gpu_capable": False},
    "sound_events": {"num_cpus": 1.0, "gpu_capable": False},
    "sound_duration": {"num_cpus": 1.0, "gpu_capable": False},
    "sound_temporal": {"num_cpus": 1.0, "gpu_capable": False},
    "chords": {"num_cpus": 1.0, "gpu_capable": False},
    "audio_features": {"num_cpus": 1.0, "gpu_capable": False},
}
DEFAULT_RESOURCES = {"num_cpus": 1.0, "gpu_capable": False}  # a tool not listed above
POOLS = ("per-tool", "shared")   # actor pool layouts (RayWarmOptions.pools)
COMMIT_EVERY_S = 5.0        # commit at least this often (seconds) while outputs arrive
RAY_HINT = "pip install -e '.[ray]'"


def available_engines() -> list[str]:
    return list(ENGINES)


@dataclass(frozen=True)
class RayWarmOptions:
    """How `warm_ray` runs.

    address: None starts a private local runtime (`actors` CPUs, on 127.0.0.1) and stops it at the
      end; "auto" joins the cluster this node belongs to (`ray start`); "HOST:PORT" joins that GCS;
      "ray://HOST:10001" uses Ray Client.
    actors: actors per tool (a fixed pool). batch_size: clips per actor call.
    gpus: GPUs per actor for GPU-capable tools (TOOL_RESOURCES), 0 = CPU only.
    parquet: folder (local path) receiving Parquet part files; None = none.
    local_cache: also store into this machine's cache. At least one destination is needed.
    commit_every: outputs per commit (cache transaction / Parquet part).
    """

    address: str | None = None
    actors: int = 2
    batch_size: int = 4
    gpus: float = 0.0
    parquet: str | None = None
    local_cache: bool = True
    commit_every: int = 64
    pools: str = "per-tool"      # "per-tool": one actor pool per tool (own resources, e.g. GPU ASR);
                                 # "shared": one pool running every tool (decodes once, like the process pool)
    object_store_mb: int = 256   # object store of a private local runtime, MB (clip rows are small)

    def __post_init__(self) -> None:
        if int(self.actors) < 1:
            raise ValueError(f"actors={self.actors!r} must be at least 1 (actors per tool)")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be at least 1 (clips per actor call)")
        if float(self.gpus) < 0:
            raise ValueError(f"gpus={self.gpus!r} must be 0 (CPU only) or more (GPUs per actor)")
        if int(self.commit_every) < 1:
            raise ValueError(f"commit_every={self.commit_every!r} must be at least 1 (outputs per commit)")
        if self.pools not in POOLS:
            raise ValueError(f"pools={self.pools!r} is not valid; valid: {', '.join(POOLS)}")
        if int(self.object_store_mb) < 64:
            raise ValueError(f"object_store_mb={self.object_store_mb!r} must be at least 64")
        if not self.local_cache and not self.parquet:
            raise ValueError("nothing would be stored; keep the local cache or pass a Parquet folder (--parquet DIR)")
        if self.address is not None and not str(self.address).strip():
            raise ValueError("address is empty; pass 'auto', HOST:PORT or ray://HOST:10001, or omit it for a local runtime")


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ToolcacheError(f"ray is not installed (--engine ray needs ray[data] and pyarrow); {RAY_HINT}") from None
    from toolcache.transfer import require_pyarrow

    require_pyarrow()
    return ray


def _one_thread_env() -> None:
    """Like the process pool's workers: one BLAS/OpenMP thread per actor (an actor has one CPU)."""
    for var, value in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"),
                       ("NUMBA_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE"), ("KMP_BLOCKTIME", "0")):
        os.environ.setdefault(var, value)


class ToolActor:
    """Tools in one Ray actor (one tool with pools="per-tool", all of them with "shared"): hashes
    each clip once (the first stage), keys each (tool, clip), skips keys that already landed, decodes
    once per sample rate and computes the rest. Output columns per tool T: k_T (key), s_T (computed |
    cached | failed), e_T (envelope JSON, "" unless computed), x_T (error)."""

    def __init__(self, tools: Sequence[str], params_by_tool: Mapping[str, Mapping[str, Any] | None],
                 max_seconds: float, done: frozenset):
        _one_thread_env()
        from toolcache.api import resolve_params
        from toolcache.registry import get_tool

        self.jobs = []
        for t in tools:
            spec = get_tool(t)
            user = params_by_tool.get(t)
            self.jobs.append((spec, resolve_params(spec, user) if user else None))  # None: defaults (as run_many)
        self.max_seconds = max_seconds
        self.done = done

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from toolcache.api import compute_envelope, key_for
        from toolcache.audio import file_sha256, load_audio, stat_audio_path
        from toolcache.cache import compact_json

        paths = [str(p) for p in batch["path"]]
        shas = [str(s) for s in batch["sha256"]] if "sha256" in batch else [""] * len(paths)
        bad = [str(x) for x in batch["bad"]] if "bad" in batch else [""] * len(paths)
        cols: dict[str, list[str]] = {f"{c}_{spec.name}": [] for spec, _ in self.jobs for c in ("k", "s", "e", "x")}
        for i, path in enumerate(paths):
            if not shas[i] and not bad[i]:
                try:
                    stat_audio_path(path)  # AudioError (missing, empty, a folder) with its one-line fix
                    shas[i] = file_sha256(path)
                except ToolcacheError as exc:
                    bad[i] = " ".join(str(exc).split())
            clips: dict[int, Any] = {}  # sample rate (Hz) -> decoded clip, as run_many
            for spec, params in self.jobs:
                key = env_text = error = ""
                if bad[i]:  # the file cannot be read: every tool fails on it
                    st, error = "failed", bad[i]
                else:
                    key, parts = key_for(spec, shas[i], params, self.max_seconds)
                    if key in self.done:
                        st = "cached"
                    else:
                        t0 = time.perf_counter()
                        try:
                            clip = clips.get(spec.sample_rate)
                            if clip is None:
                                clip = clips[spec.sample_rate] = load_audio(path, spec.sample_rate, self.max_seconds,
                                                                            sha256=shas[i])
                            env = compute_envelope(spec, parts["params"], parts, clip, time.perf_counter() - t0)
                            env_text, st = compact_json(env), "computed"
                        except ToolcacheError as exc:
                            st, error = "failed", " ".join(str(exc).split())
                for c, v in (("k", key), ("s", st), ("e", env_text), ("x", error)):
                    cols[f"{c}_{spec.name}"].append(v)
        out = {c: np.asarray(v, dtype=object) for c, v in batch.items()}
        out["sha256"] = np.asarray(shas, dtype=object)
        out["bad"] = np.asarray(bad, dtype=object)
        for c, values in cols.items():
            out[c] = np.asarray(values, dtype=object)
        return out


class _Sink:
    """Commits outputs on the driver: local cache (one transaction) and/or one Parquet part file."""

    def __init__(self, options: RayWarmOptions):
        from toolcache.cache import open_cache

        self.options = options
        self.cache = open_cache() if options.local_cache else None
        self.parquet = Path(options.parquet).expanduser() if options.parquet else None
        self.pending: list[tuple[str, dict, dict, str]] = []   # (key, parts, envelope, text)
        self.last = time.monotonic()
        self.parts_written = 0

    def add(self, key: str, parts: dict, env: dict, text: str) -> None:
        self.pending.append((key, parts, env, text))

    def due(self) -> bool:
        return len(self.pending) >= self.options.commit_every or (
            self.pending and time.monotonic() - self.last >= COMMIT_EVERY_S)

    def flush(self) -> int:
        """Commit what is pending; returns how many outputs landed. CacheError propagates."""
        from toolcache.transfer import row_for, write_rows

        batch = self.pending
        self.last = time.monotonic()
        if not batch:
            return 0
        if self.parquet is not None:
            name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
            write_rows(self.parquet / name, (row_for(k, text) for k, _, _, text in batch))
            self.parts_written += 1
        if self.cache is not None:
            self.cache.put_many_json("tool", [(parts, env) for _, parts, env, _ in batch])
        self.pending = []  # only now: after a CacheError they count as not stored
        return len(batch)


def done_keys(options: RayWarmOptions) -> set[str]:
    """Keys that already landed in the destinations (skipped by the actors)."""
    from toolcache.transfer import read_keys

    done: set[str] = set()
    if options.local_cache:
        from toolcache.cache import open_cache

        done.update(open_cache().keys("tool"))
    if options.parquet:
        done.update(read_keys(options.parquet))
    return done


def _start_ray(ray, options: RayWarmOptions, n_cpus: int) -> bool:
    """Connect to (or start) Ray; True if this call started it (and must stop it)."""
    import logging

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                              "configure_logging": True}
    if options.address is None:  # private runtime on this machine, loopback only
        kwargs.update(num_cpus=n_cpus, object_store_memory=int(options.object_store_mb) * 1024 * 1024,
                      _node_ip_address="127.0.0.1")
    else:
        kwargs.pop("include_dashboard")
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options.address or "a local runtime"
        raise ToolcacheError(f"cannot start or join Ray at {where} ({' '.join(str(exc).split())[:200]}); "
                             f"check the address (`ray status` on the head node) or omit --address to run "
                             f"locally") from None
    return True


def warm_ray(files: Sequence[str | os.PathLike], tools: Sequence[str], options: RayWarmOptions | None = None,
             max_seconds: float | None = None, params_by_tool: Mapping[str, Mapping[str, Any]] | None = None,
             on_file: Callable[[dict], None] | None = None) -> dict:
    """Warm `files` x `tools` on Ray; returns the same summary as toolcache.warm.warm (plus engine,
    actors, parquet, ray_start_s). Raises WarmStopped at the first cache error (what landed is true)."""
    from toolcache.api import resolve_params
    from toolcache.audio import default_max_seconds, validate_max_seconds
    from toolcache.cache import CacheError
    from toolcache.registry import get_tool
    from toolcache.transfer import envelope_key_parts
    from toolcache.warm import SKIPPED, WarmStopped, header_warning

    options = options or RayWarmOptions()
    if not tools:
        raise ValueError("no tools to warm; pass --tools NAME[,NAME...] (see `audiorouter tools list`)")
    specs = [get_tool(t) for t in tools]
    params_by_tool = dict(params_by_tool or {})
    for spec in specs:  # bad params fail here, before Ray starts
        if params_by_tool.get(spec.name):
            resolve_params(spec, params_by_tool[spec.name])
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    paths = [str(f) for f in files]
    if options.parquet:
        out_dir = Path(options.parquet).expanduser()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolcacheError(f"cannot create the Parquet folder {out_dir}: {exc.strerror}; pass a writable "
                                 f"--parquet folder") from None
    ray = require_ray()
    t0 = time.perf_counter()
    done = frozenset(done_keys(options))
    sink = _Sink(options)
    started = _start_ray(ray, options, int(options.actors))
    ray_start_s = time.perf_counter() - t0
    counts = {"computed": 0, "cached": 0, "failed": 0, SKIPPED: 0}
    failures: list[dict] = []
    warnings: list[dict] = []
    seen_files = 0
    stopped: str | None = None
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False   # the CLI draws its own rich bar
        ctx.print_on_execution_start = False
        n_blocks = max(1, -(-len(paths) // int(options.batch_size)))
        ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=min(n_blocks, 10_000))
        groups = [[s.name] for s in specs] if options.pools == "per-tool" else [[s.name for s in specs]]
        for group in groups:
            res = [TOOL_RESOURCES.get(t, DEFAULT_RESOURCES) for t in group]
            gpus = float(options.gpus) if any(r.get("gpu_capable") for r in res) else 0.0
            ds = ds.map_batches(
                ToolActor, batch_size=int(options.batch_size), batch_format="numpy",
                fn_constructor_kwargs={"tools": group, "params_by_tool": {t: params_by_tool.get(t) for t in group},
                                       "max_seconds": limit, "done": done},
                # min 1 actor per pool, up to `actors`: pools of several tools share the CPUs
                # (fixed pools of N each would need tools x N CPUs at once and run one after another)
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=int(options.actors)),
                num_cpus=float(max(r["num_cpus"] for r in res)),
                **({"num_gpus": gpus} if gpus else {}))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for r in range(len(batch["path"])):
                res_file = {"path": str(batch["path"][r]), "status": {}, "keys": {}, "errors": {}, "warnings": []}
                for spec in specs:
                    t = spec.name
                    st, key = str(batch["s_" + t][r]), str(batch["k_" + t][r])
                    if st == "computed":
                        text = str(batch["e_" + t][r])
                        env = json.loads(text)
                        parts = envelope_key_parts(env)
                        from toolcache.cache import make_key

                        if make_key("tool", parts) != key:  # would be a bug: never store under a wrong key
                            st, res_file["errors"][t] = "failed", "key from the envelope differs from the actor's key"
                        else:
                            sink.add(key, parts, env, text)
                            note = header_warning(env)
                            if note and note not in res_file["warnings"]:
                                res_file["warnings"].append(note)
                    elif st == "failed":
                        res_file["errors"][t] = str(batch["x_" + t][r])
                    res_file["status"][t] = st
                    if key:
                        res_file["keys"][t] = key
                    counts[st] += 1
                    if st == "failed":
                        failures.append({"path": res_file["path"], "tool": t, "error": res_file["errors"][t]})
                for w in res_file["warnings"]:
                    warnings.append({"path": res_file["path"], "warning": w})
                seen_files += 1
                if sink.due():
                    sink.flush()
                if on_file is not None:
                    on_file(res_file)
        sink.flush()
    except CacheError as exc:
        stopped = " ".join(str(exc).split())
        counts["computed"] -= len(sink.pending)  # never stored
        counts[SKIPPED] += len(sink.pending)
    finally:
        if started:
            ray.shutdown()
    counts[SKIPPED] += len(specs) * (len(paths) - seen_files)
    summary = {
        "engine": "ray",
        "files": len(paths),
        "tools": [s.name for s in specs],
        "workers": int(options.actors),
        "workers_asked": int(options.actors),
        **counts,
        "failures": failures,
        "warnings": warnings,
        "stopped": stopped,
        "parquet": str(Path(options.parquet).expanduser()) if options.parquet else None,
        "parquet_parts": sink.parts_written,
        "local_cache": bool(options.local_cache),
        "ray_start_s": round(ray_start_s, 3),
        "elapsed_s": round(time.perf_counter() - t0, 3),
    }
    if stopped:
        raise WarmStopped(f"warm stopped at the first cache error ({counts['computed']} new tool outputs stored, "
                          f"{counts['cached']} already there; re-run to resume once the cache can be written): "
                          f"{stopped}", summary)
    return summary
