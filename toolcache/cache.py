"""The content-addressed cache: one SQLite file shared by tools and the reasoner.

Location: `$AUDIOROUTER_CACHE_DIR/cache.sqlite`, else `$XDG_CACHE_HOME/audiorouter/cache.sqlite`,
else `~/.cache/audiorouter/cache.sqlite`.

Key = sha256 of the canonical JSON (sorted keys, no spaces) of `{"namespace": ..., **key_parts}`;
for a tool the parts are audio sha256, tool, tool version, backend/model id, params (and the
decode limit), so a copied or renamed file hits and any change to the tool, model or params misses.

Durability: WAL journal, `synchronous=NORMAL`, a 30 s busy timeout; an entry and the counters it
changes (`meta.total_size`, `meta.entries`, the per-tool `tally` row) are written in ONE
transaction, so a process killed mid-write leaves either the whole entry or nothing and the
counters always equal the rows (`tests/test_cache_fault.py` kills inside that transaction).
Several processes may read and write at once.

Size limit (`$AUDIOROUTER_CACHE_MAX_MB`, default 1024 MB = 10^6 bytes) counts what the disk holds
per entry (`entry_size`: the SQLite pages its row takes, overflow pages included, plus its two
index entries), not just the JSON's length; `cache compact` brings the file itself to within a
few percent of that count (measured: bench/bench_scaling.py). `cache stats` also shows the real
file size and its free pages.

LRU eviction is never one big transaction. After a put commits, if the total is over the limit,
the put deletes at most `PUT_EVICT_ROWS` least-recently-used rows itself, in a second short
transaction that it skips if another process holds the write lock, down to `EVICT_HEADROOM`
below the limit (so the next puts do not evict at all). `Cache.evict()` and `cache compact` loop
batches of at most `EVICT_BATCH_ROWS` rows / `EVICT_BATCH_S`, with `EVICT_PAUSE_S` pauses, so
another process's write waits at most about one batch. Candidates come from the covering index
`entries_lru(last_used, size)` (+ rowid): no value is read to choose them. Freed pages are reused
by later writes; new files use `auto_vacuum=INCREMENTAL` so `compact()` can give them back to the
disk in small steps. WAL checkpoints run on a background thread every ~2 MB written
(`CHECKPOINT_BG_BYTES`), so their copy + fsync is not paid inside a put. A hit only rewrites
`last_used` when it is older than `TOUCH_RESOLUTION_S` (60 s), so repeated hits stay read-only
and fast; LRU order is exact to within a minute.

Counters: `cache stats` reads `tally` (one row per namespace/tool) and `meta`, never the entries,
so it is O(1) in the number of entries.

Faults: every sqlite3 error becomes a one-line CacheError naming the cause and the fix that fits
it: CacheCorrupt (damaged file: `audiorouter cache clear` moves it aside and starts a new one),
CacheNotWritable (read-only file/folder or disk full: never "delete the file"). A file that is not
writable is opened read-only and still serves hits. If the file is deleted or replaced while this
process uses it, the next read or write notices (device/inode check before each COMMIT and read)
and reopens the path, so nothing is reported as stored in a file that no longer exists.

Schema: version 2 (rowid table, value stored last, counters). A version-1 file (WITHOUT ROWID,
no counters) is migrated when first opened writable; read-only it is served as it is.

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
from urllib.parse import quote

from toolcache.cache_maint import (EVICT_BATCH_ROWS, EVICT_BATCH_S, EVICT_HEADROOM, EVICT_PAUSE_S,  # noqa: F401
                                   PUT_EVICT_ROWS, CacheMaintenance)
from toolcache.cache_schema import (BUSY_TIMEOUT_MS, CACHE_DIR_ENV, NAMESPACES, PAGE_BYTES,  # noqa: F401
                                    SCHEMA, SCHEMA_VERSION, check_namespace, entry_size, error_code, error_kind, migrate_v1, transaction)
from toolcache.errors import CacheCorrupt, CacheError, CacheNotWritable

__all__ = ["Cache", "CacheError", "CacheCorrupt", "CacheNotWritable", "open_cache", "default_cache_dir",
           "default_max_bytes", "make_key", "canonical_json", "compact_json"]

CACHE_FILE = "cache.sqlite"
CACHE_MAX_MB_ENV = "AUDIOROUTER_CACHE_MAX_MB"
FAULT_ENV = "AUDIOROUTER_CACHE_FAULT"   # test-only: SIGKILL this process at the named point (see _fault)
DEFAULT_MAX_MB = 1024.0              # MB (10^6 bytes) of counted entry bytes before LRU eviction
JOURNAL_LIMIT_B = 64 * 1024 * 1024   # the WAL is truncated to this after a checkpoint
CHECKPOINT_BG_BYTES = 2_000_000      # after ~2 MB written, a background thread checkpoints the WAL, so the
                                     # copy + fsync (10-300 ms on a VM disk) is not paid inside a put; SQLite's
                                     # own auto-checkpoint (1000 pages = 4 MB) stays as the safety net
TOUCH_RESOLUTION_S = 60.0            # a hit rewrites last_used only if it is older than this
MEMO_RACY_S = 2.0                    # trust a hash memo only for files unmodified this long before hashing
OPEN_RETRY_S = 0.02                  # s between tries of the connection setup while it reports busy (see _open)


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
    check_namespace(namespace)
    if "namespace" in key_parts:
        raise ValueError("key_parts must not contain 'namespace'; pass it as the namespace argument")
    payload = canonical_json({"namespace": namespace, **dict(key_parts)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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


class _Conn:
    """One connection and the identity (device, inode) of the file it opened."""

    __slots__ = ("c", "pid", "ident", "read_only", "legacy")

    def __init__(self, c, pid, ident, read_only, legacy):
        self.c, self.pid, self.ident, self.read_only, self.legacy = c, pid, ident, read_only, legacy


class Cache(CacheMaintenance):
    """One cache file. Connections are opened lazily, one per process and thread.

    `Cache()` uses the default location and size limit (read from the environment at creation).
    `read_only=True` never writes (also chosen automatically when the file or folder is not writable).
    """

    def __init__(self, path: str | os.PathLike | None = None, max_bytes: int | None = None,
                 read_only: bool = False):
        if path is None:
            path = default_cache_dir() / CACHE_FILE
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / CACHE_FILE
        self.path = p
        self._path_s = str(p)  # os.stat on a str skips Path.__fspath__ (checked on every read)
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes!r} must be positive, e.g. 1024 * 10**6")
        self.want_read_only = bool(read_only)
        self.reopened = 0  # times the file was found deleted/replaced and the path reopened
        self._local = threading.local()
        self._memo: dict[str, tuple[tuple, str]] = {}  # abspath -> (stat signature, sha256)
        self._fault_at = os.environ.get(FAULT_ENV) or None  # test-only kill point
        self._written = 0  # bytes committed since the last background checkpoint
        self._ckpt: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, max_bytes={self.max_bytes})"

    # ---------------------------------------------------------------- errors
    def _error(self, op: str, exc: BaseException) -> CacheError:
        """The one-line error for `exc` during `op` (read/write/open), with the fix for that cause."""
        kind, code, p = error_kind(exc), error_code(exc), self.path
        if kind == "corrupt":
            return CacheCorrupt(f"the cache {p} is damaged ({code}); run `audiorouter cache clear` to move it "
                                f"aside and start a new one, or set ${CACHE_DIR_ENV} to another folder")
        if kind == "full":
            return CacheNotWritable(f"cannot write the cache {p}: the disk is full ({code}); free space on that "
                                    f"disk or set ${CACHE_DIR_ENV} to a folder on another disk (entries already "
                                    f"cached are intact)", reason="disk full")
        if kind == "read-only" or (kind == "cantopen" and op == "write"):
            return CacheNotWritable(f"the cache {p} is read-only ({code}); outputs cannot be stored: make the "
                                    f"file and its folder writable, or set ${CACHE_DIR_ENV} to a writable folder "
                                    f"(hits are still served)", reason="read-only")
        if kind == "busy":
            return CacheError(f"the cache {p} stayed locked by another process for {BUSY_TIMEOUT_MS // 1000} s "
                              f"({code}); re-run when the other audiorouter command has finished")
        return CacheError(f"cannot {op} the cache {p} ({code}); check that disk and the file's permissions, "
                          f"or set ${CACHE_DIR_ENV} to another folder")

    def _fault(self, point: str) -> None:
        """Test-only: `AUDIOROUTER_CACHE_FAULT=<point>` SIGKILLs this process here (inside a transaction)."""
        if self._fault_at == point:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    # ---------------------------------------------------------------- connection
    def _state(self) -> _Conn:
        local = self._local
        st = getattr(local, "st", None)
        if st is not None and st.pid == _PID[0]:
            return st
        local.st = self._open()
        return local.st

    @property
    def conn(self) -> sqlite3.Connection:
        """This process's (and thread's) connection; reopened after a fork."""
        return self._state().c

    @property
    def read_only(self) -> bool:
        """True when this cache serves hits but cannot store (file/folder not writable, or asked)."""
        return self._state().read_only

    def _file_ident(self) -> tuple | None:
        try:
            st = os.stat(self._path_s)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _fresh(self) -> _Conn:
        """The connection, reopened first if the file was deleted or replaced since it was opened."""
        st = self._state()
        if st.ident != self._file_ident():
            self._reopen()
            st = self._state()
        return st

    def _reopen(self) -> None:
        st = getattr(self._local, "st", None)
        self._local = threading.local()
        self._memo.clear()
        self.reopened += 1
        if st is not None and st.pid == _PID[0]:
            try:
                st.c.close()
            except sqlite3.Error:
                pass
        if not self.path.exists():  # a -wal/-shm left by the deleted file must not be applied to a new one
            for suffix in ("-wal", "-shm"):
                try:
                    os.unlink(f"{self.path}{suffix}")
                except OSError:
                    pass

    def _writable_location(self) -> bool:
        folder = self.path.parent
        if self.path.exists():
            return os.access(self.path, os.W_OK) and os.access(folder, os.W_OK)
        return os.access(folder, os.W_OK)

    def _open(self) -> _Conn:
        if not self.path.exists() and not self.want_read_only:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheNotWritable(
                    f"cannot create the cache folder {self.path.parent}: {exc.strerror}; "
                    f"set ${CACHE_DIR_ENV} to a writable folder"
                ) from None
        if self.want_read_only or not self._writable_location():
            if not self.path.exists():
                raise CacheNotWritable(
                    f"cannot create the cache {self.path}: its folder is not writable; "
                    f"set ${CACHE_DIR_ENV} to a writable folder"
                )
            return self._open_read_only()
        # Two processes creating the same new file: `PRAGMA journal_mode=WAL` upgrades a read lock to a
        # write lock in rollback mode, and SQLite answers busy at once (no busy-handler wait: waiting
        # could deadlock). The other process finishes the conversion in milliseconds, so try again,
        # within the same budget a locked write gets.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return self._open_writable()
            except _SetupBusy as busy:
                if time.monotonic() >= deadline:
                    raise self._error("open", busy.exc) from None
                time.sleep(OPEN_RETRY_S)

    def _open_writable(self) -> _Conn:
        c = None
        try:
            # isolation_level=None: autocommit; transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            c = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                check_same_thread=False)
            c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            c.execute("PRAGMA auto_vacuum=INCREMENTAL")  # these two take effect only on a new, empty file
            c.execute(f"PRAGMA page_size={PAGE_BYTES}")
            # WAL: readers never block the writer. (On a filesystem without shared memory SQLite
            # keeps its rollback journal: still correct, just less concurrent.)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute(f"PRAGMA journal_size_limit={JOURNAL_LIMIT_B}")
            legacy = self._prepare(c)
        except sqlite3.DatabaseError as exc:
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
            kind = error_kind(exc)
            if kind in ("read-only", "cantopen"):
                return self._open_read_only()
            if kind == "busy":
                raise _SetupBusy(exc) from None
            raise self._error("open", exc) from None
        return _Conn(c, _PID[0], self._file_ident(), False, legacy)

    def _open_read_only(self) -> _Conn:
        """Serve hits from a file this process may not write (pre-warmed shared cache)."""
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        last: BaseException | None = None
        # immutable=1 as a fallback: in a read-only folder SQLite cannot create the -shm a WAL file
        # needs; nobody can write there either, so reading it as immutable is safe.
        for suffix in ("", "&immutable=1"):
            try:
                c = sqlite3.connect(uri + suffix, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                    check_same_thread=False)
                tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "entries" not in tables:
                    raise CacheNotWritable(f"the cache {self.path} is read-only and empty (no entries table); "
                                           f"make it writable or set ${CACHE_DIR_ENV} to a writable folder")
                legacy = "tally" not in tables
                return _Conn(c, _PID[0], self._file_ident(), True, legacy)
            except sqlite3.DatabaseError as exc:
                last = exc
                if error_kind(exc) == "corrupt":
                    break
        raise self._error("open", last) from None

    def _prepare(self, c: sqlite3.Connection) -> bool:
        """Create (or migrate to) schema 2. Returns True for a legacy file served as it is."""
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "tally" in tables and "file_hashes" in tables:
            ver = c.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if ver is not None and int(ver[0]) > SCHEMA_VERSION:
                raise CacheError(f"the cache {self.path} was written by a newer audiorouter (schema {ver[0]}); "
                                 f"upgrade audiorouter or set ${CACHE_DIR_ENV} to another folder")
            return False
        with transaction(c):
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "entries" in tables and "tally" not in tables:
                migrate_v1(c)
                self._vacuum_after_migration = True
            else:
                for stmt in SCHEMA:
                    c.execute(stmt)
                c.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        return False

    def close(self) -> None:
        st = getattr(self._local, "st", None)
        if st is not None and st.pid == _PID[0]:
            st.c.close()
        self._local = threading.local()

    def _writer(self) -> sqlite3.Connection:
        st = self._fresh()
        if st.read_only:
            raise CacheNotWritable(f"the cache {self.path} is read-only; outputs cannot be stored: make the file "
                                   f"and its folder writable, or set ${CACHE_DIR_ENV} to a writable folder "
                                   f"(hits are still served)", reason="read-only")
        if getattr(self, "_vacuum_after_migration", False):
            self._vacuum_after_migration = False
            try:
                st.c.execute("VACUUM")  # one-off after a schema-1 migration: dense pages, incremental vacuum
            except sqlite3.DatabaseError:
                pass  # busy or no space: `cache compact` does it later
        return st.c

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
        try:
            return _loads(value)
        except ValueError as exc:
            raise self._error("read", exc) from None

    def _select(self, key: str):
        try:
            return self._fresh().c.execute("SELECT value, last_used FROM entries WHERE key=?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    def _touch(self, key: str, now: float) -> None:
        """Best effort: a hit never waits for another process's write lock just to bump LRU time."""
        st = self._state()
        if st.read_only:
            return
        c = st.c
        try:
            c.execute("PRAGMA busy_timeout=0")
            c.execute("UPDATE entries SET last_used=? WHERE key=?", (now, key))
        except sqlite3.DatabaseError:
            pass  # locked (or the disk is full): the next hit will try again
        finally:
            try:
                c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.DatabaseError:
                pass

    def has(self, namespace: str, key_parts: Mapping[str, Any]) -> bool:
        return self.has_key(make_key(namespace, key_parts))

    def has_key(self, key: str) -> bool:
        try:
            return self._fresh().c.execute("SELECT 1 FROM entries WHERE key=?", (key,)).fetchone() is not None
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    def put_json(self, namespace: str, key_parts: Mapping[str, Any], value: Any) -> str:
        """Store `value` (JSON-able) under these key parts in one transaction; returns the key.

        The `tool` column is key_parts["tool"] (or ["reasoner"]), `audio_sha256` is
        key_parts["audio_sha256"] when present. Over the limit, evicts one bounded LRU batch after
        the commit. Raises CacheNotWritable (read-only, disk full), CacheCorrupt, CacheError.
        """
        return self.put_many_json(namespace, [(key_parts, value)])[0]

    def put_many_json(self, namespace: str, items: Iterable[tuple[Mapping[str, Any], Any]]) -> list[str]:
        """Store several (key_parts, value) pairs in one transaction (all or none); returns their keys."""
        check_namespace(namespace)
        rows = []
        for key_parts, value in items:
            key = make_key(namespace, key_parts)
            text = compact_json(value)  # key order kept (envelopes read tool-first)
            label = str(key_parts.get("tool") or key_parts.get("reasoner") or "")
            rows.append((key, namespace, label, key_parts.get("audio_sha256"), text))
        if rows:
            self._put_rows(rows)
        return [r[0] for r in rows]

    def _put_rows(self, rows: list[tuple]) -> None:
        for attempt in (0, 1):
            try:
                c = self._writer()
                now = time.time()
                with transaction(c):
                    deltas: dict[tuple[str, str], list[int]] = {}
                    for key, namespace, label, audio, text in rows:
                        self._write_row(c, deltas, key, namespace, label, audio, text, now)
                    self._fault("put:after-insert")   # entry written, counters not yet: must roll back
                    total = self._apply_deltas(c, deltas)
                    self._fault("put:before-commit")
                    if self._file_ident() != self._state().ident:
                        raise _FileReplaced()
            except _FileReplaced:
                self._reopen()  # rolled back; write into the file that now has this path
                continue
            except sqlite3.DatabaseError as exc:
                raise self._error("write", exc) from None
            break
        else:
            raise CacheError(f"the cache {self.path} keeps being replaced while in use; stop the other process "
                             f"that deletes it, or set ${CACHE_DIR_ENV} to another folder")
        written = sum(len(r[4]) for r in rows)
        if total > self.max_bytes:
            try:  # eviction is best effort: the entries are already committed
                written += self._evict_from_put(rows[-1][0]) * 3 * PAGE_BYTES
            except sqlite3.DatabaseError:
                pass
        self._wrote(written)

    def _wrote(self, nbytes: int) -> None:
        """Count bytes written; past CHECKPOINT_BG_BYTES start a background WAL checkpoint."""
        self._written += nbytes
        if self._written < CHECKPOINT_BG_BYTES:
            return
        t = self._ckpt
        if t is not None and t.is_alive():
            return
        self._written = 0
        self._ckpt = threading.Thread(target=self._checkpoint, name="cache-checkpoint", daemon=True)
        self._ckpt.start()

    def _checkpoint(self) -> None:
        """PASSIVE checkpoint on its own connection (never waits for, nor blocks, readers and writers).
        Killed with the process at exit: a checkpoint is crash-safe, the WAL keeps what it did not copy."""
        try:
            c = sqlite3.connect(self._path_s, timeout=1.0, isolation_level=None, check_same_thread=False)
            try:
                c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                c.close()
        except sqlite3.Error:
            pass  # the next one, or SQLite's auto-checkpoint, does it

    @staticmethod
    def _write_row(c, deltas, key, namespace, label, audio, text, now) -> None:
        size = entry_size(key, text)
        old = c.execute("SELECT size, created, namespace, tool FROM entries WHERE key=?", (key,)).fetchone()
        created = now
        if old is not None:
            created = old[1]
            d = deltas.setdefault((old[2], old[3]), [0, 0])
            d[0] -= 1
            d[1] -= old[0]
        c.execute(
            "INSERT OR REPLACE INTO entries(key, namespace, tool, audio_sha256, size, created, last_used, value)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (key, namespace, label, audio, size, created, now, text),
        )
        d = deltas.setdefault((namespace, label), [0, 0])
        d[0] += 1
        d[1] += size

    @staticmethod
    def _apply_deltas(c: sqlite3.Connection, deltas: Mapping[tuple[str, str], list[int]]) -> int:
        """Counters follow the rows, in the caller's transaction; returns the new total_size."""
        dn = db = 0
        for (ns, tool), (n, b) in deltas.items():
            if n or b:
                c.execute("INSERT INTO tally(namespace, tool, entries, bytes) VALUES (?,?,?,?) ON CONFLICT"
                          " (namespace, tool) DO UPDATE SET entries=entries+excluded.entries,"
                          " bytes=bytes+excluded.bytes", (ns, tool, n, b))
            dn += n
            db += b
        c.execute("UPDATE meta SET value = value + ? WHERE name='entries'", (dn,))
        return int(c.execute("UPDATE meta SET value = value + ? WHERE name='total_size' RETURNING value",
                             (db,)).fetchone()[0])

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
        try:
            state = self._fresh()
            c = state.c
            row = c.execute(
                "SELECT dev, inode, size, mtime_ns, ctime_ns, sha256 FROM file_hashes WHERE path=?", (real,)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None
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
            if not state.read_only and not state.legacy:
                try:
                    with transaction(c):
                        new = c.execute("SELECT 1 FROM file_hashes WHERE path=?", (real,)).fetchone() is None
                        c.execute(
                            "INSERT OR REPLACE INTO file_hashes(path, dev, inode, size, mtime_ns, ctime_ns, sha256,"
                            " hashed) VALUES (?,?,?,?,?,?,?,?)",
                            (real, *sig, digest, before),
                        )
                        if new:
                            c.execute("UPDATE meta SET value = value + 1 WHERE name='memo_files'")
                except sqlite3.DatabaseError:
                    pass  # memo is an optimisation only (locked, read-only, disk full)
        return digest

    def _remember(self, path: str, sig: tuple, digest: str) -> None:
        if len(self._memo) >= 100_000:  # bounded: ~200 B per file
            self._memo.clear()
        self._memo[path] = (sig, digest)


class _SetupBusy(Exception):
    """The connection setup was refused as busy (retried by Cache._open until the busy timeout)."""

    def __init__(self, exc: sqlite3.DatabaseError):
        super().__init__(str(exc))
        self.exc = exc


class _FileReplaced(Exception):
    """The cache path no longer names the file this connection writes to (deleted or replaced)."""


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
