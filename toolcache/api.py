"""`toolcache.run`: hash the file, look the tool output up in the cache, else decode + compute + store.

The returned envelope (ARCHITECTURE.md, "Tool output"):
{tool, tool_version, backend, audio_sha256, params, result, limits,
 audio{duration_s, original_duration_s, truncated, sample_rate, original_sample_rate, channels,
 max_seconds, header_mismatch[, header_duration_s]}, elapsed_s, cached}

A hit costs one stat (the hash memo), two indexed SELECTs and a JSON parse: well under 2 ms.
Tool errors raise ToolFailed and are never cached.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

from toolcache.audio import default_max_seconds, file_sha256, load_audio, stat_audio_path, validate_max_seconds
from toolcache.cache import CacheError, canonical_json, compact_json, make_key, open_cache
from toolcache.errors import ToolcacheError, ToolFailed
from toolcache.registry import ToolSpec, get_tool

NAMESPACE = "tool"
# Bump when the envelope or the decoding rules change for every tool (keys follow, old rows miss).
# 2: audio.header_mismatch / header_duration_s; non-finite samples refused instead of analysed.
ENVELOPE_VERSION = "2"


def resolve_params(spec: ToolSpec, params: Mapping[str, Any] | None) -> dict:
    """The tool's default params updated with `params`; unknown names raise ValueError listing valid ones.

    Unknown names are refused (not passed through) because a typo would otherwise silently create a
    different cache key and a result computed with the default.
    """
    merged = dict(spec.default_params)
    for name, value in (params or {}).items():
        if name not in merged:
            valid = ", ".join(sorted(merged)) or "none"
            raise ValueError(f"tool {spec.name!r} has no parameter {name!r}; valid parameters: {valid}")
        merged[name] = value
    return merged


_BACKENDS: dict[tuple[int, str], tuple[ToolSpec, str]] = {}


def backend_id(spec: ToolSpec, params: Mapping[str, Any]) -> str:
    """spec.backend(params), memoised per process (package versions do not change while running;
    some backends read package metadata, which costs ~100 ms the first time)."""
    ident = (id(spec), canonical_json(dict(params)))
    found = _BACKENDS.get(ident)
    if found is None or found[0] is not spec:  # the spec is kept alive in the value: ids are not reused
        try:
            backend = str(spec.backend(params))
        except ToolcacheError:
            raise
        except Exception as exc:
            raise ToolFailed(
                f"tool {spec.name!r} cannot name its backend for params {dict(params)}: "
                f"{' '.join(f'{type(exc).__name__}: {exc}'.split())}; check the tool's parameters and installation"
            ) from exc
        found = _BACKENDS[ident] = (spec, backend)
    return found[1]


def key_parts(spec: ToolSpec, audio_sha256: str, params: Mapping[str, Any], max_seconds: float) -> dict:
    """Everything the output depends on: audio bytes, tool + version + backend/model, params, decode limit."""
    return {
        "audio_sha256": audio_sha256,
        "tool": spec.name,
        "tool_version": str(spec.version),
        "backend": backend_id(spec, params),
        "params": dict(params),
        "sample_rate": int(spec.sample_rate),   # Hz the tool sees
        "max_seconds": float(max_seconds),      # seconds decoded: a longer limit can change the result
        "envelope": ENVELOPE_VERSION,           # the wrapper around `result` (audio fields) changed
    }


_KEYS: dict[tuple, tuple[ToolSpec, str, dict]] = {}
_KEYS_MAX = 100_000  # entries of the per-process key memo (~300 B each) before it is reset


def key_for(spec: ToolSpec, audio_sha256: str, params: Mapping[str, Any] | None, max_seconds: float) -> tuple[str, dict]:
    """(cache key, key parts), memoised per process: canonical JSON + sha256 cost more than the
    whole indexed SELECT of a hit, and the same (tool, clip, params) is looked up again and again.

    params=None means the tool's defaults (the common case: no JSON encoding at all on a hit);
    otherwise they must already be resolved (`resolve_params`). parts["params"] are the resolved ones.
    """
    ident = (id(spec), audio_sha256, None if params is None else canonical_json(dict(params)), max_seconds)
    found = _KEYS.get(ident)
    if found is None or found[0] is not spec:  # spec kept alive in the value: its id is not reused
        resolved = resolve_params(spec, None) if params is None else dict(params)
        parts = key_parts(spec, audio_sha256, resolved, max_seconds)
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        found = _KEYS[ident] = (spec, make_key(NAMESPACE, parts), parts)
    return found[1], found[2]


def cache_key(tool: str, audio_path: str | os.PathLike, params: Mapping[str, Any] | None = None,
              max_seconds: float | None = None) -> str:
    """The cache key `run` would use for these arguments (hashes the file)."""
    spec = get_tool(tool)
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    p, st = stat_audio_path(audio_path)
    return key_for(spec, open_cache().file_sha256(p, st), resolve_params(spec, params), limit)[0]


def lookup(tool: str, audio_path: str | os.PathLike, params: Mapping[str, Any] | None = None,
           max_seconds: float | None = None, sha256: str | None = None, _t0: float | None = None) -> dict | None:
    """The cached envelope `run` would return, or None on a miss; never computes (~0.06 ms on a hit:
    one stat, the hash memo, one SELECT), so an event loop can call it inline.

    sha256: the file's sha256 when the caller already has it (the gateway hashes the bytes it
    spools), else it comes from the hash memo or is computed. Raises what `run` raises for bad
    arguments and an unreadable cache."""
    t0 = time.perf_counter() if _t0 is None else _t0
    spec = get_tool(tool)
    p, st = stat_audio_path(audio_path)
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    store = open_cache()
    sha = sha256 if sha256 is not None else store.file_sha256(p, st)
    key, _ = key_for(spec, sha, resolve_params(spec, params) if params else None, limit)
    hit = store.get_by_key(key)
    if hit is not None:
        hit["cached"] = True
        hit["elapsed_s"] = round(time.perf_counter() - t0, 6)
    return hit


def run(tool: str, audio_path: str | os.PathLike, params: Mapping[str, Any] | None = None,
        cache: bool = True, max_seconds: float | None = None) -> dict:
    """Output envelope of `tool` on `audio_path` (from the cache when possible).

    cache=False recomputes (never reads the cache) and stores the fresh output best-effort,
    overwriting the old entry: `--no-cache` refreshes, nothing computed is thrown away.
    Raises UnknownToolError, AudioError, ToolFailed, ValueError (bad params).
    """
    t0 = time.perf_counter()
    if cache:
        hit = lookup(tool, audio_path, params, max_seconds, _t0=t0)
        if hit is not None:
            return hit
    out = run_many([tool], audio_path, {tool: params} if params else None, cache=cache, max_seconds=max_seconds,
                   _t0=t0)
    return out[tool]


def run_many(tools: Sequence[str], audio_path: str | os.PathLike,
             params_by_tool: Mapping[str, Mapping[str, Any] | None] | None = None,
             cache: bool = True, max_seconds: float | None = None,
             raise_errors: bool = True, _t0: float | None = None) -> dict[str, dict | ToolcacheError]:
    """Run several tools on one file, decoding the audio once per sample rate among the misses.

    raise_errors=False returns the ToolcacheError of a failed tool in place of its envelope
    (batch warming keeps going); bad arguments (unknown tool, bad params) always raise.
    """
    t0 = time.perf_counter() if _t0 is None else _t0
    p, st = stat_audio_path(audio_path)
    limit = default_max_seconds() if max_seconds is None else validate_max_seconds(max_seconds)
    params_by_tool = params_by_tool or {}
    jobs = []
    for name in tools:
        spec = get_tool(name)
        user = params_by_tool.get(name)
        jobs.append((spec, resolve_params(spec, user) if user else None))  # None: defaults
    store = open_cache()
    try:
        sha = store.file_sha256(p, st)
    except CacheError:
        if cache:
            raise
        sha = file_sha256(p)  # cache unusable: --no-cache still works without it

    results: dict[str, dict | ToolcacheError] = {}
    misses = []
    for spec, params in jobs:
        key, parts = key_for(spec, sha, params, limit)
        hit = store.get_by_key(key) if cache else None
        if hit is not None:
            hit["cached"] = True
            hit["elapsed_s"] = round(time.perf_counter() - t0, 6)
            results[spec.name] = hit
        else:
            misses.append((spec, parts["params"], parts))
    if not misses:
        return results

    clips: dict[int, Any] = {}
    for spec, params, parts in misses:
        t1 = time.perf_counter()
        try:
            clip = clips.get(spec.sample_rate)
            if clip is None:
                clip = clips[spec.sample_rate] = load_audio(p, spec.sample_rate, limit, sha256=sha)
            decode_s = time.perf_counter() - t1
            envelope = compute_envelope(spec, params, parts, clip, decode_s)
        except ToolcacheError as exc:
            if raise_errors:
                raise
            results[spec.name] = exc
            continue
        try:
            store.put_json(NAMESPACE, parts, envelope)
        except CacheError as exc:
            if cache and not raise_errors:   # batch warming: report it and stop, the next put fails the same way
                results[spec.name] = exc
                break
            # one question (tools run, route, the gateway) or --no-cache: the result is computed, do not
            # lose it; say why it is not cached (read-only, full disk, I/O error) instead
            envelope = dict(envelope, cache_error=" ".join(str(exc).split()))
        results[spec.name] = envelope
    return results


def compute_envelope(spec: ToolSpec, params: dict, parts: dict, clip, decode_s: float) -> dict:
    """Run the tool and wrap its result; any backend exception becomes ToolFailed (never cached)."""
    import json

    t = time.perf_counter()
    try:
        result = spec.compute(clip, **params)
    except ToolcacheError:
        raise
    except Exception as exc:  # the backend's own error: name it, do not cache it
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise ToolFailed(
            f"tool {spec.name!r} failed on {clip.path} (backend {parts['backend']}): {detail}; "
            f"nothing was cached: check the file plays and the backend is installed, then retry"
        ) from exc
    if not isinstance(result, dict):
        raise ToolFailed(
            f"tool {spec.name!r} returned {type(result).__name__}, not a dict, on {clip.path}; "
            f"nothing was cached: fix the tool's compute() to return a JSON object"
        )
    elapsed = decode_s + (time.perf_counter() - t)
    envelope = {
        "tool": spec.name,
        "tool_version": parts["tool_version"],
        "backend": parts["backend"],
        "audio_sha256": parts["audio_sha256"],
        "params": parts["params"],
        "result": result,
        "limits": spec.limits,
        "audio": {
            "duration_s": round(clip.duration_s, 6),
            "original_duration_s": round(clip.original_duration_s, 6),
            "truncated": bool(clip.truncated),
            "sample_rate": int(clip.sample_rate),
            "original_sample_rate": int(clip.original_sample_rate),
            "channels": int(clip.channels),
            "max_seconds": parts["max_seconds"],
            # The file holds less audio than its header announces (cut download/copy): say so.
            "header_mismatch": clip.header_duration_s is not None,
            **({"header_duration_s": round(clip.header_duration_s, 6)} if clip.header_duration_s is not None else {}),
        },
        "elapsed_s": round(elapsed, 6),
        "cached": False,
    }
    try:
        # Round-trip through JSON so a fresh result is exactly what a later hit returns
        # (numpy scalars become numbers, tuples lists, NaN/inf null).
        return json.loads(compact_json(to_jsonable(envelope), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ToolFailed(
            f"tool {spec.name!r} returned a result that is not JSON-serialisable on {clip.path} ({exc}); "
            f"nothing was cached: fix the tool to return plain numbers, strings, lists and dicts"
        ) from None


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
