"""The content-addressed cache: one SQLite file shared by tools and the reasoner.

Location: `$AUDIOROUTER_CACHE_DIR/cache.sqlite`, else `$XDG_CACHE_HOME/audiorouter/cache.sqlite`,
else `~/.cache/audiorouter/cache.sqlite`.

Key = sha256 of the canonical JSON (sorted keys, no spaces) of `{"namespace": ..., **key_parts}`;
for a tool the parts are audio sha256, tool, tool version, backend/model id, params (and the
decode limit), so a copied or renamed file hits and any change to the tool, model or params misses.

Durability: WAL journal, `synchronous=NORMAL`, a 30 s busy timeout; every write (entry + running
size total + LRU eviction) is ONE transaction, so a process killed mid-write leaves either the
whole entry or nothing. Several processes may read and write at once.

LRU: rows carry `last_used` (unix seconds); when the total `size` exceeds the limit
(`$AUDIOROUTER_CACHE_MAX_MB`, default 1024 MB) the least recently used rows are deleted. A hit
only rewrites `last_used` when it is older than `TOUCH_RESOLUTION_S` (60 s), so repeated hits
stay read-only and fast; LRU order is exact to within a minute.

Hash memo: `(path, device, inode, size, mtime_ns, ctime_ns) -> sha256` rows in the same file let a hit on
an unchanged file skip re-reading its bytes. Any write to the file changes mtime/ctime (or size),
so a modified file misses; a renamed or copied file is simply re-hashed (and then hits). As in
git's "racy" rule, a memo row is only trusted if the file was last modified more than
`MEMO_RACY_S` before the hash was taken (timestamps are coarse: a rewrite within the same tick
could otherwise look unchanged).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from toolcache.errors import ToolcacheError

CACHE_FILE = "cache.sqlite"
CACHE_DIR_ENV = "AUDIOROUTER_CACHE_DIR"
CACHE_MAX_MB_ENV = "AUDIOROUTER_CACHE_MAX_MB"
DEFAULT_MAX_MB = 1024.0              # MB (10^6 bytes) of JSON values before LRU eviction
BUSY_TIMEOUT_MS = 30_000             # wait up to 30 s for another process's write lock
TOUCH_RESOLUTION_S = 60.0            # a hit rewrites last_used only if it is older than this
MEMO_RACY_S = 2.0                    # trust a hash memo only for files unmodified this long before hashing
NAMESPACES = ("tool", "reasoner")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key          TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    tool         TEXT NOT NULL,
    audio_sha256 TEXT,
    value        TEXT NOT NULL,
    size         INTEGER NOT NULL,
    created      REAL NOT NULL,
    last_used    REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_last_used ON entries(last_used);
CREATE INDEX IF NOT EXISTS entries_ns_tool ON entries(namespace, tool);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('total_size', 0);
INSERT OR IGNORE INTO meta(name, value) VALUES ('schema_version', 1);
CREATE TABLE IF NOT EXISTS file_hashes (
    path     TEXT PRIMARY KEY,
    dev      INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    hashed   REAL NOT NULL
) WITHOUT ROWID;
"""


class CacheError(ToolcacheError):
    """The cache file cannot be opened or written (corrupt, read-only, disk full)."""


def default_cache_dir() -> Path:
    """`$AUDIOROUTER_CACHE_DIR`, else `$XDG_CACHE_HOME/audiorouter`, else `~/.cache/audiorouter`."""
    explicit = os.environ.get(CACHE_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "audiorouter"


def default_max_bytes() -> int:
    """`$AUDIOROUTER_CACHE_MAX_MB` (MB = 10^6 bytes) or 1024 MB, as bytes."""
    raw = os.environ.get(CACHE_MAX_MB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_MB * 1_000_000)
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise ValueError(f"${CACHE_MAX_MB_ENV}={raw!r} must be a positive number of megabytes, e.g. 1024")
    return int(mb * 1_000_000)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept (the key's input)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def compact_json(obj: Any, allow_nan: bool = True) -> str:
    """JSON without whitespace, key order kept (stored values)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_default, allow_nan=allow_nan)


def make_key(namespace: str, key_parts: Mapping[str, Any]) -> str:
    """sha256 hex of canonical JSON of {"namespace": namespace, **key_parts}."""
    _check_namespace(namespace)
    if "namespace" in key_parts:
        raise ValueError("key_parts must not contain 'namespace'; pass it as the namespace argument")
    payload = canonical_json({"namespace": namespace, **dict(key_parts)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _check_namespace(namespace: str) -> None:
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown cache namespace {namespace!r}; valid: {', '.join(NAMESPACES)}")


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths to plain JSON types (tools may return them)."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _hash_file(path: str) -> str:
    from toolcache.audio import file_sha256  # lazy: audio imports numpy

    return file_sha256(path)


# This process's id, kept current across fork without a getpid() syscall on every cache hit
# (a forked child must not reuse its parent's SQLite connection).
_PID = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))

_loads = json.JSONDecoder().decode  # skips json.loads' per-call argument checks (hit path)


class Cache:
    """One cache file. Connections are opened lazily, one per process and thread.

    `Cache()` uses the default location and size limit (read from the environment at creation).
    """

    def __init__(self, path: str | os.PathLike | None = None, max_bytes: int | None = None):
        if path is None:
            path = default_cache_dir() / CACHE_FILE
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / CACHE_FILE
        self.path = p
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes!r} must be positive, e.g. 1024 * 10**6")
        self._local = threading.local()
        self._memo: dict[str, tuple[tuple, str]] = {}  # abspath -> (stat signature, sha256)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, max_bytes={self.max_bytes})"

    # ---------------------------------------------------------------- connection
    @property
    def conn(self) -> sqlite3.Connection:
        """This process's (and thread's) connection; reopened after a fork."""
        local = self._local
        c = getattr(local, "conn", None)
        if c is not None and getattr(local, "pid", None) == _PID[0]:
            return c
        local.conn = self._open()
        local.pid = _PID[0]
        return local.conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache folder {self.path.parent}: {exc.strerror}; "
                f"set ${CACHE_DIR_ENV} to a writable folder"
            ) from None
        try:
            # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            c = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                check_same_thread=False)
            c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer. (On a filesystem without shared memory SQLite
            # keeps its rollback journal: still correct, just less concurrent.)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            if not c.execute("SELECT 1 FROM sqlite_master WHERE name='file_hashes'").fetchone():
                with _transaction(c):
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            c.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise CacheError(
                f"cannot open the cache {self.path}: {exc}; delete that file (it is only a cache) "
                f"or set ${CACHE_DIR_ENV} to another folder"
            ) from None
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None and getattr(self._local, "pid", None) == _PID[0]:
            c.close()
        self._local = threading.local()

    # ---------------------------------------------------------------- generic JSON API
    def key_for(self, namespace: str, key_parts: Mapping[str, Any]) -> str:
        return make_key(namespace, key_parts)

    def get_json(self, namespace: str, key_parts: Mapping[str, Any]) -> Any | None:
        """The stored value for these key parts, or None. Refreshes last_used (coarsely)."""
        return self.get_by_key(make_key(namespace, key_parts))

    def get_by_key(self, key: str) -> Any | None:
        row = self._select(key)
        if row is None:
            return None
        value, last_used = row
        now = time.time()
        if now - last_used > TOUCH_RESOLUTION_S:
            self._touch(key, now)
        return _loads(value)

    def _select(self, key: str):
        try:
            return self.conn.execute("SELECT value, last_used FROM entries WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._read_error(exc) from None

    def _read_error(self, exc: Exception) -> CacheError:
        return CacheError(f"cannot read the cache {self.path}: {exc}; delete that file (it is only a cache) "
                          f"or set ${CACHE_DIR_ENV} to another folder")

    def _touch(self, key: str, now: float) -> None:
        """Best effort: a hit never waits for another process's write lock just to bump LRU time."""
        c = self.conn
        try:
            c.execute("PRAGMA busy_timeout=0")
            c.execute("UPDATE entries SET last_used=? WHERE key=?", (now, key))
        except sqlite3.OperationalError:
            pass  # locked: the next hit will try again
        finally:
            c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def has(self, namespace: str, key_parts: Mapping[str, Any]) -> bool:
        return self.has_key(make_key(namespace, key_parts))

    def has_key(self, key: str) -> bool:
        return self.conn.execute("SELECT 1 FROM entries WHERE key=?", (key,)).fetchone() is not None

    def put_json(self, namespace: str, key_parts: Mapping[str, Any], value: Any) -> str:
        """Store `value` (JSON-able) under these key parts in one transaction; returns the key.

        The `tool` column is key_parts["tool"] (or ["reasoner"]), `audio_sha256` is
        key_parts["audio_sha256"] when present. Evicts least recently used rows if over the limit.
        """
        key = make_key(namespace, key_parts)
        text = compact_json(value)  # key order kept (envelopes read tool-first)
        label = str(key_parts.get("tool") or key_parts.get("reasoner") or "")
        audio = key_parts.get("audio_sha256")
        self._put(key, namespace, label, audio, text)
        return key

    def _put(self, key: str, namespace: str, label: str, audio: str | None, text: str) -> None:
        size = len(text.encode("utf-8"))
        now = time.time()
        c = self.conn
        try:
            with _transaction(c):
                old = c.execute("SELECT size, created FROM entries WHERE key=?", (key,)).fetchone()
                created = old[1] if old else now
                c.execute(
                    "INSERT OR REPLACE INTO entries(key, namespace, tool, audio_sha256, value, size, created, last_used)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    (key, namespace, label, audio, text, size, created, now),
                )
                total = self._add_total(c, size - (old[0] if old else 0))
                if total > self.max_bytes:
                    self._evict(c, total, keep=key)
        except sqlite3.OperationalError as exc:
            raise CacheError(
                f"cannot write the cache {self.path}: {exc}; check free disk space and permissions, "
                f"or set ${CACHE_DIR_ENV} to another folder"
            ) from None

    @staticmethod
    def _add_total(c: sqlite3.Connection, delta: int) -> int:
        c.execute("UPDATE meta SET value = value + ? WHERE name='total_size'", (delta,))
        return int(c.execute("SELECT value FROM meta WHERE name='total_size'").fetchone()[0])

    def _evict(self, c: sqlite3.Connection, total: int, keep: str) -> int:
        """Delete least-recently-used rows until the total is under the limit (inside the caller's tx)."""
        removed = 0
        while total > self.max_bytes:
            rows = c.execute(
                "SELECT key, size FROM entries WHERE key != ? ORDER BY last_used LIMIT 256", (keep,)
            ).fetchall()
            if not rows:
                break  # only the new entry is left: keep it even if it alone exceeds the limit
            freed = 0
            for k, size in rows:
                c.execute("DELETE FROM entries WHERE key=?", (k,))
                freed += size
                removed += 1
                total -= size
                if total <= self.max_bytes:
                    break
            self._add_total(c, -freed)
        return removed

    # ---------------------------------------------------------------- file hash memo
    def file_sha256(self, path: str | os.PathLike, st: os.stat_result | None = None) -> str:
        """sha256 of the file's bytes, from the memo if the file is unchanged since it was hashed.

        `st`: the file's os.stat() if the caller just took it (saves a syscall on the hit path).
        The memo is only an index: what makes it correct is the signature (device, inode, size,
        mtime_ns, ctime_ns) of the file as it is *now*, so a path that now names another file or
        a rewritten one never matches.
        """
        raw = os.fspath(path)
        if st is None:
            st = os.stat(raw)
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        mine = self._memo.get(raw)  # in-process copy of settled rows, keyed by the path as given
        if mine is not None and mine[0] == sig:
            return mine[1]
        # abspath, not realpath: no per-component lstat; a symlink is its own memo row, and a
        # re-pointed link changes the stat (stat follows links) so it cannot serve a stale hash.
        real = os.path.abspath(raw)
        c = self.conn
        try:
            row = c.execute(
                "SELECT dev, inode, size, mtime_ns, ctime_ns, sha256 FROM file_hashes WHERE path=?", (real,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._read_error(exc) from None
        if row is not None and tuple(row[:5]) == sig:
            self._remember(raw, sig, row[5])
            return row[5]
        before = time.time()
        digest = _hash_file(real)
        st2 = os.stat(real)
        unchanged = (st2.st_dev, st2.st_ino, st2.st_size, st2.st_mtime_ns, st2.st_ctime_ns) == sig
        # Racy-file rule: only memoise when the last modification is clearly older than the hash.
        settled = before - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > MEMO_RACY_S
        if unchanged and settled:
            self._remember(raw, sig, digest)
            try:
                with _transaction(c):
                    c.execute(
                        "INSERT OR REPLACE INTO file_hashes(path, dev, inode, size, mtime_ns, ctime_ns, sha256, hashed)"
                        " VALUES (?,?,?,?,?,?,?,?)",
                        (real, *sig, digest, before),
                    )
            except sqlite3.OperationalError:
                pass  # memo is an optimisation only
        return digest

    def _remember(self, path: str, sig: tuple, digest: str) -> None:
        if len(self._memo) >= 100_000:  # bounded: ~200 B per file
            self._memo.clear()
        self._memo[path] = (sig, digest)

    # ---------------------------------------------------------------- maintenance
    def stats(self) -> dict:
        """Path, entries and bytes per namespace/tool, total bytes, size limit."""
        c = self.conn
        per = c.execute(
            "SELECT namespace, tool, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY namespace, tool"
            " ORDER BY namespace, tool"
        ).fetchall()
        entries = sum(r[2] for r in per)
        size = sum(r[3] for r in per)
        try:
            file_bytes = sum(
                os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p)
            )
        except OSError:
            file_bytes = 0
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "file_bytes": file_bytes,
            "max_bytes": self.max_bytes,
            "by_tool": [
                {"namespace": ns, "tool": tool, "entries": n, "bytes": b} for ns, tool, n, b in per
            ],
            "memo_files": c.execute("SELECT COUNT(*) FROM file_hashes").fetchone()[0],
        }

    def clear(self, namespace: str | None = None, tool: str | None = None) -> int:
        """Delete entries (all, or one namespace/tool); returns how many were removed."""
        if namespace is not None:
            _check_namespace(namespace)
        where, args = [], []
        if namespace is not None:
            where.append("namespace=?")
            args.append(namespace)
        if tool is not None:
            where.append("tool=?")
            args.append(tool)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        c = self.conn
        with _transaction(c):
            n, freed = c.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries{cond}", args).fetchone()
            c.execute(f"DELETE FROM entries{cond}", args)
            if not where:
                c.execute("DELETE FROM file_hashes")
                self._memo.clear()
                c.execute("UPDATE meta SET value=0 WHERE name='total_size'")
            else:
                self._add_total(c, -int(freed))
        if not where:
            try:
                c.execute("VACUUM")  # give the disk space back
            except sqlite3.OperationalError:
                pass  # another process is reading: space is reused later instead
        return int(n)

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def keys(self, namespace: str | None = None) -> list[str]:
        if namespace is None:
            return [r[0] for r in self.conn.execute("SELECT key FROM entries")]
        return [r[0] for r in self.conn.execute("SELECT key FROM entries WHERE namespace=?", (namespace,))]

    def existing(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (for resumable batches)."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT key FROM entries WHERE key IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.conn.execute(q, chunk))
        return found


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one atomic write, lock taken up front."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        return False


_SHARED: dict[tuple, Cache] = {}


def open_cache(path: str | os.PathLike | None = None) -> Cache:
    """A per-process shared Cache for `path` (default location and limit from the environment *now*).

    Keyed by the raw environment values so the hit path does not rebuild paths on every call.
    """
    ident = (_PID[0], None if path is None else os.fspath(path), *_env_values())
    shared = _SHARED.get(ident)
    if shared is None:
        shared = _SHARED[ident] = Cache(path)
    return shared


_ENV_KEYS = (CACHE_DIR_ENV, "XDG_CACHE_HOME", CACHE_MAX_MB_ENV)
_ENV_KEYS_B = tuple(k.encode() for k in _ENV_KEYS)


def _env_values() -> tuple:
    """The three environment values the default cache depends on, read cheaply.

    os.environ.get costs ~1-2 us per unset name (a KeyError inside); on POSIX the bytes dict behind
    os.environ is always in sync with it, so read that directly when it exists.
    """
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and os.name == "posix":
        return (data.get(_ENV_KEYS_B[0]), data.get(_ENV_KEYS_B[1]), data.get(_ENV_KEYS_B[2]))
    return tuple(os.environ.get(k) for k in _ENV_KEYS)
