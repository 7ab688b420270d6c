"""Move tool outputs between caches as Parquet (`audiorouter cache export|import`).

One row per cached tool output (namespace "tool"):

    key           string  the cache key (sha256 hex of the key parts, see toolcache.api.key_parts)
    tool          string
    tool_version  string
    backend       string
    audio_sha256  string
    bytes         int64   UTF-8 length of `envelope` (a truncated or re-encoded row is refused)
    sha256        string  sha256 hex of `envelope`'s UTF-8 bytes (a row damaged in transit is refused)
    envelope      string  the stored envelope, compact JSON, exactly as the cache holds it

The same schema is written by the Ray engine of `cache warm --parquet DIR` (toolcache.ray_warm), so a
cluster's output folder is imported like an export file.

Import is verified by key: each row's key is recomputed from its envelope (tool, tool_version,
backend, audio_sha256, params, audio.sample_rate, audio.max_seconds + the envelope version) and a row
whose key does not match is refused, never stored: a row can only land under the key its own
envelope names, so it cannot overwrite another clip's or tool's output. `bytes` and `sha256` catch
damage in transit. Neither proves who computed a result (whoever writes the file can recompute both):
import files from caches you trust. Import is idempotent: rows whose key is already in the cache are left alone.
Export and import stream in row groups (EXPORT_ROWS_PER_GROUP rows): envelopes are never all in
memory; import keeps only the keys seen (~100 B each: ~100 MB at 1M rows) to count duplicates.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from toolcache.errors import ToolcacheError

NAMESPACE = "tool"
COLUMNS = ("key", "tool", "tool_version", "backend", "audio_sha256", "bytes", "sha256", "envelope")
EXPORT_ROWS_PER_GROUP = 2000     # rows per Parquet row group (and per read from SQLite): ~6 MB at 3 kB/row
IMPORT_ROWS_PER_COMMIT = 500     # rows per cache transaction on import
RAY_HINT = "pip install -e '.[ray]'"


def require_pyarrow():
    """pyarrow + pyarrow.parquet, or a one-line ToolcacheError naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ToolcacheError(f"pyarrow is not installed (Parquet export/import needs it); {RAY_HINT}") from None
    return pa, pq


def schema():
    pa, _ = require_pyarrow()
    return pa.schema([("key", pa.string()), ("tool", pa.string()), ("tool_version", pa.string()),
                      ("backend", pa.string()), ("audio_sha256", pa.string()), ("bytes", pa.int64()),
                      ("sha256", pa.string()), ("envelope", pa.string())])


def envelope_key_parts(env: Mapping[str, Any]) -> dict:
    """The key parts of toolcache.api.key_parts, rebuilt from an envelope alone (no registry, no model):
    what import checks a row's key against, and what the Ray engine stores under.

    Raises ValueError when a field is missing or has the wrong type."""
    from toolcache.api import ENVELOPE_VERSION

    try:
        audio = env["audio"]
        parts = {
            "audio_sha256": env["audio_sha256"],
            "tool": env["tool"],
            "tool_version": str(env["tool_version"]),
            "backend": env["backend"],
            "params": dict(env["params"]),
            "sample_rate": int(audio["sample_rate"]),     # Hz the tool saw (the spec's rate)
            "max_seconds": float(audio["max_seconds"]),   # decode limit in seconds
            "envelope": ENVELOPE_VERSION,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"envelope lacks a key field ({type(exc).__name__}: {exc})") from None
    if not all(isinstance(parts[k], str) for k in ("audio_sha256", "tool", "backend")):
        raise ValueError("envelope fields audio_sha256/tool/backend must be strings")
    return parts


def envelope_key(env: Mapping[str, Any]) -> str:
    from toolcache.cache import make_key

    return make_key(NAMESPACE, envelope_key_parts(env))


def row_for(key: str, text: str) -> dict:
    """One Parquet row for a stored envelope (compact JSON text) under `key`."""
    import hashlib

    env = json.loads(text)
    raw = text.encode("utf-8")
    return {"key": key, "tool": str(env.get("tool", "")), "tool_version": str(env.get("tool_version", "")),
            "backend": str(env.get("backend", "")), "audio_sha256": str(env.get("audio_sha256", "")),
            "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "envelope": text}


def write_rows(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows (dicts with COLUMNS) to one Parquet file, atomically: a temp file renamed into place,
    so a killed writer leaves either the whole file or none. Returns the row count."""
    pa, pq = require_pyarrow()
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    n = 0
    writer = None
    try:
        chunk: list[dict] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= EXPORT_ROWS_PER_GROUP:
                writer = writer or pq.ParquetWriter(str(tmp), schema(), compression="zstd")
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema()))
                n += len(chunk)
                chunk = []
        writer = writer or pq.ParquetWriter(str(tmp), schema(), compression="zstd")
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema()))
            n += len(chunk)
        writer.close()
        writer = None
        os.replace(tmp, dest)
    except OSError as exc:
        raise ToolcacheError(f"cannot write {dest}: {exc.strerror or exc}; pass a path in a writable folder "
                             f"with free space") from None
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return n


def _cache_rows(cache, tool: str | None) -> Iterator[tuple[str, str]]:
    """(key, envelope text) of every tool entry, streamed in EXPORT_ROWS_PER_GROUP-row reads.

    Reads the entries table directly (a plain SELECT on Cache.conn): the Cache API has no iterator
    over values, and get_by_key per key would parse and re-serialise every envelope."""
    import sqlite3

    try:
        c = cache.conn
        sql = "SELECT key, value FROM entries WHERE namespace=?" + (" AND tool=?" if tool else "")
        cur = c.execute(sql, (NAMESPACE, tool) if tool else (NAMESPACE,))
        while True:
            batch = cur.fetchmany(EXPORT_ROWS_PER_GROUP)
            if not batch:
                return
            for key, value in batch:
                yield key, value
    except sqlite3.DatabaseError as exc:
        raise cache._error("read", exc) from None


def export_parquet(path: str | os.PathLike, tool: str | None = None, cache=None) -> dict:
    """Write the cache's tool outputs (one tool's with `tool`) to a Parquet file. Returns
    {path, rows, bytes (envelope bytes), file_bytes, tool, elapsed_s}."""
    from toolcache.cache import open_cache
    from toolcache.registry import get_tool

    t0 = time.perf_counter()
    dest = Path(path).expanduser()
    if dest.suffix.lower() != ".parquet":
        raise ValueError(f"{dest} does not end in .parquet; pass an output file like tools.parquet")
    if dest.is_dir():
        raise ValueError(f"{dest} is a folder; pass an output file like {dest / 'tools.parquet'}")
    if not dest.parent.is_dir():
        raise ValueError(f"folder {dest.parent} does not exist; create it or pass a path in an existing folder")
    if tool is not None:
        get_tool(tool)  # unknown name: UnknownToolError listing the valid ones
    cache = cache if cache is not None else open_cache()
    total = [0]

    def rows():
        for key, text in _cache_rows(cache, tool):
            row = row_for(key, text)
            total[0] += row["bytes"]
            yield row

    n = write_rows(dest, rows())
    return {"path": str(dest), "rows": n, "bytes": total[0], "file_bytes": dest.stat().st_size, "tool": tool,
            "elapsed_s": round(time.perf_counter() - t0, 3)}


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """A .parquet file, or every *.parquet under a folder (a Ray warm output); ValueError if none."""
    src = Path(path).expanduser()
    if src.is_dir():
        files = sorted(p for p in src.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"no *.parquet files under {src}; pass a file written by `audiorouter cache export` "
                             f"or a folder written by `cache warm --engine ray --parquet`")
        return files
    if not src.exists():
        raise ValueError(f"{src} does not exist; pass a file written by `audiorouter cache export`")
    return [src]


def read_keys(path: str | os.PathLike) -> set[str]:
    """Keys of every row under `path` (file or folder); an absent folder has none."""
    _, pq = require_pyarrow()
    src = Path(path).expanduser()
    if src.is_dir() and not any(src.rglob("*.parquet")):
        return set()
    if not src.exists():
        return set()
    keys: set[str] = set()
    for f in parquet_files(src):
        try:
            keys.update(pq.read_table(str(f), columns=["key"]).column("key").to_pylist())
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a damaged file
            raise ToolcacheError(f"{f} is not a readable Parquet file ({type(exc).__name__}); "
                                 f"delete it (its outputs are recomputed) and re-run") from None
    return keys


def _iter_parquet_rows(f: Path) -> Iterator[tuple[int, dict]]:
    _, pq = require_pyarrow()
    try:
        pf = pq.ParquetFile(str(f))
        names = set(pf.schema_arrow.names)
        lacking = [c for c in ("key", "envelope") if c not in names]
        if lacking:
            raise ToolcacheError(f"{f} has no column {', '.join(lacking)}; pass a file written by "
                                 f"`audiorouter cache export` (columns: {', '.join(COLUMNS)})")
        cols = [c for c in COLUMNS if c in names]
        n = 0
        for batch in pf.iter_batches(batch_size=IMPORT_ROWS_PER_COMMIT, columns=cols):
            for row in batch.to_pylist():
                yield n, row
                n += 1
    except ToolcacheError:
        raise
    except Exception as exc:
        raise ToolcacheError(f"{f} is not a readable Parquet file ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}); pass a file written by `audiorouter cache export`") from None


def check_row(row: Mapping[str, Any]) -> tuple[dict, dict] | str:
    """(key parts, envelope) of a valid row, or the reason it is refused (one short phrase)."""
    text, key = row.get("envelope"), row.get("key")
    if not isinstance(text, str) or not isinstance(key, str):
        return "key or envelope is empty"
    import hashlib

    raw = text.encode("utf-8")
    if row.get("bytes") is not None and int(row["bytes"]) != len(raw):
        return "envelope length differs from its bytes column (cut or re-encoded)"
    if row.get("sha256") is not None and hashlib.sha256(raw).hexdigest() != row["sha256"]:
        return "envelope differs from its sha256 column (damaged in transit)"
    try:
        env = json.loads(text)
        if not isinstance(env, dict):
            return "envelope is not a JSON object"
        parts = envelope_key_parts(env)
    except ValueError as exc:
        return f"envelope is not valid ({exc})"
    from toolcache.cache import make_key

    if make_key(NAMESPACE, parts) != key:
        return "key does not match its envelope"
    return parts, env


def import_parquet(path: str | os.PathLike, cache=None) -> dict:
    """Store every verified row of `path` (file or folder of *.parquet) not already in the cache.

    Returns {path, files, rows, imported, present, refused, refused_first, stale, elapsed_s}:
    `present` rows were in the cache already (idempotent), `refused` rows failed the key check and
    were not stored (`refused_first`: "<file> row <n>: <reason>"), `stale` rows are for another tool
    version or backend than this install's (stored, but this install never looks them up)."""
    from toolcache.api import backend_id, resolve_params
    from toolcache.cache import open_cache
    from toolcache.errors import UnknownToolError
    from toolcache.registry import get_tool

    t0 = time.perf_counter()
    files = parquet_files(path)
    cache = cache if cache is not None else open_cache()
    counts = {"rows": 0, "imported": 0, "present": 0, "refused": 0, "stale": 0}
    refused_first: str | None = None
    current: dict[tuple, bool] = {}

    def is_current(env: dict) -> bool:
        ident = (env["tool"], env["tool_version"], env["backend"], json.dumps(env["params"], sort_keys=True))
        if ident not in current:
            try:
                spec = get_tool(env["tool"])
                ok = str(spec.version) == str(env["tool_version"]) and \
                    backend_id(spec, resolve_params(spec, env["params"])) == env["backend"]
            except (UnknownToolError, ValueError, ToolcacheError):
                ok = False
            current[ident] = ok
        return current[ident]

    def flush(batch: list[tuple[str, dict, dict]]) -> None:
        if not batch:
            return
        have = cache.existing([k for k, _, _ in batch])
        new = [(parts, env) for k, parts, env in batch if k not in have]
        counts["present"] += len(batch) - len(new)
        if new:
            cache.put_many_json(NAMESPACE, new)
            counts["imported"] += len(new)
        batch.clear()

    pending: list[tuple[str, dict, dict]] = []
    seen: set[str] = set()
    for f in files:
        for n, row in _iter_parquet_rows(f):
            counts["rows"] += 1
            checked = check_row(row)
            if isinstance(checked, str):
                counts["refused"] += 1
                refused_first = refused_first or f"{f} row {n}: {checked}"
                continue
            parts, env = checked
            key = row["key"]
            if key in seen:  # the same output twice in the input (two exports merged): store it once
                counts["present"] += 1
                continue
            seen.add(key)
            if not is_current(env):
                counts["stale"] += 1
            pending.append((key, parts, env))
            if len(pending) >= IMPORT_ROWS_PER_COMMIT:
                flush(pending)
    flush(pending)
    return {"path": str(Path(path).expanduser()), "files": len(files), **counts, "refused_first": refused_first,
            "elapsed_s": round(time.perf_counter() - t0, 3)}


def refused_message(summary: Mapping[str, Any]) -> str:
    """The one line for refused rows: `<problem>; <fix>` (the good rows are stored already)."""
    return (f"{summary['refused']} of {summary['rows']} rows refused by the key check (key recomputed from the "
            f"envelope does not match, or the envelope is cut, damaged or not JSON) "
            f"(first: {summary['refused_first']}); the other {summary['imported'] + summary['present']} are in the "
            f"cache: re-export the refused outputs from the source cache (they were altered or cut in transit)")
