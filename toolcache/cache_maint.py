"""Eviction, compaction, counters and recovery of the cache file: the maintenance half of
toolcache.cache.Cache (a mixin: it uses the connection, error and counter helpers of Cache).

Every write here is a short transaction: eviction deletes at most EVICT_BATCH_ROWS rows (or
EVICT_BATCH_S) per transaction and pauses EVICT_PAUSE_S between batches, so another process's
write waits at most about one batch (bench/bench_scaling.py measures it).
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from toolcache.cache_schema import (BUSY_TIMEOUT_MS, CACHE_DIR_ENV, PAGE_BYTES, check_namespace, error_kind,
                                    transaction)
from toolcache.errors import CacheNotWritable

EVICT_BATCH_S = 0.005                # one eviction transaction deletes for at most 5 ms ...
EVICT_BATCH_ROWS = 64                # ... and at most 64 rows: its COMMIT writes every page it dirtied
                                     # (~2-3 per 3 kB entry), which costs more than the deletes themselves
PUT_EVICT_ROWS = 16                  # a put over the limit deletes at most this many rows itself (it adds ~1)
EVICT_PAUSE_S = 0.020                # pause between batches of evict()/compact(): > the 1-15 ms retry gaps of
                                     # SQLite's busy handler, so a waiting writer gets the lock in between
EVICT_HEADROOM = 0.01                # evict to 1% below the limit, so the next puts do not evict at all
VACUUM_STEP_PAGES = 256              # pages handed back to the disk per compact() step (1 MB at 4 KB pages)
TRUNCATE_TRIES = 40                  # compact()'s final WAL truncation: tries 50 ms apart (2 s) while another
TRUNCATE_RETRY_S = 0.05              # connection's checkpoint (e.g. a put's background PASSIVE one) holds the lock


class CacheMaintenance:
    """evict / compact / stats / clear / move_aside, mixed into Cache."""

    # ---------------------------------------------------------------- eviction and compaction
    def _low_water(self, limit: int | None = None) -> int:
        limit = self.max_bytes if limit is None else limit
        return int(limit * (1.0 - EVICT_HEADROOM))

    def total_size(self) -> int:
        """Counted bytes of all entries (maintained counter, O(1))."""
        try:
            return int(self._fresh().c.execute("SELECT value FROM meta WHERE name='total_size'").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    def _evict_from_put(self, keep: str) -> int:
        """The put path's share of eviction: one small batch (PUT_EVICT_ROWS), and none at all if
        another process holds the write lock (it may be evicting already): a put never waits twice."""
        c = self.conn
        c.execute("PRAGMA busy_timeout=0")
        try:
            return self._evict_batch(c, self._low_water(), keep=keep, max_rows=PUT_EVICT_ROWS)[0]
        except sqlite3.OperationalError as exc:
            if error_kind(exc) == "busy":
                return 0  # the next put (or the other process) does it
            raise
        finally:
            c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _evict_batch(self, c: sqlite3.Connection, target: int, keep: str | None = None,
                     budget_s: float = EVICT_BATCH_S, max_rows: int = EVICT_BATCH_ROWS) -> tuple[int, int, bool]:
        """One short transaction: delete LRU rows until total <= target or the time budget is spent.

        Returns (rows removed, bytes freed, more to do). Candidates come from the covering index
        (last_used, size, rowid): no value is read to choose them.
        """
        t0 = time.perf_counter()
        removed = freed = 0
        with transaction(c):
            total = int(c.execute("SELECT value FROM meta WHERE name='total_size'").fetchone()[0])
            if total <= target:
                return 0, 0, False
            keep_id = -1
            if keep is not None:
                r = c.execute("SELECT id FROM entries WHERE key=?", (keep,)).fetchone()
                keep_id = r[0] if r else -1
            cands = c.execute("SELECT id, size FROM entries INDEXED BY entries_lru WHERE id != ?"
                              " ORDER BY last_used LIMIT ?", (keep_id, max_rows)).fetchall()
            deltas: dict[tuple[str, str], list[int]] = {}
            for rid, _size in cands:
                ns, tool, size = c.execute("DELETE FROM entries WHERE id=? RETURNING namespace, tool, size",
                                           (rid,)).fetchone()
                d = deltas.setdefault((ns, tool), [0, 0])
                d[0] -= 1
                d[1] -= size
                removed += 1
                freed += size
                if total - freed <= target or time.perf_counter() - t0 > budget_s:
                    break
            self._fault("evict:mid")  # rows deleted, counters not yet: must roll back
            self._apply_deltas(c, deltas)
        return removed, freed, bool(cands) and total - freed > target

    def evict(self, max_bytes: int | None = None, pause_s: float = EVICT_PAUSE_S,
              deadline_s: float | None = None) -> dict:
        """Evict LRU entries until the counted total is under `max_bytes` (default: the limit).

        Short transactions (EVICT_BATCH_S each) with `pause_s` between them, so other processes'
        writes wait at most about one batch. Returns {removed, freed_bytes, batches, elapsed_s}.
        """
        limit = self.max_bytes if max_bytes is None else int(max_bytes)
        t0 = time.perf_counter()
        removed = freed = batches = 0
        try:
            c = self._writer()
            while True:
                n, b, more = self._evict_batch(c, self._low_water(limit))
                self._wrote(n * 3 * PAGE_BYTES)  # ~3 pages dirtied per deleted row (table, 2 indexes)
                removed, freed, batches = removed + n, freed + b, batches + (1 if n else 0)
                if not more or (deadline_s is not None and time.perf_counter() - t0 > deadline_s):
                    break
                time.sleep(pause_s)
        except sqlite3.DatabaseError as exc:
            raise self._error("write", exc) from None
        return {"removed": removed, "freed_bytes": freed, "batches": batches,
                "elapsed_s": round(time.perf_counter() - t0, 3)}

    def compact(self, pause_s: float = EVICT_PAUSE_S) -> dict:
        """Evict to the limit, then give freed pages back to the disk, in short steps.

        A file made before incremental vacuum (schema 1, or an old auto_vacuum=NONE file) is
        rewritten once with VACUUM (that one step holds the lock for its whole duration).
        Returns {removed, file_bytes_before, file_bytes_after, vacuum, wal_truncated, elapsed_s}.
        """
        t0 = time.perf_counter()
        before = self.file_bytes()
        ev = self.evict(pause_s=pause_s)
        c = self._writer()
        try:
            mode = c.execute("PRAGMA auto_vacuum").fetchone()[0]
            if mode != 2:  # 2 = INCREMENTAL
                c.execute("PRAGMA auto_vacuum=INCREMENTAL")
                c.execute("VACUUM")
                how = "full (one-off: switched the file to incremental vacuum)"
            else:
                how = "incremental"
                while c.execute("PRAGMA freelist_count").fetchone()[0] > 0:
                    # executescript steps the pragma to the end (execute() frees one page per call)
                    try:
                        c.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({VACUUM_STEP_PAGES}); COMMIT;")
                    except sqlite3.DatabaseError:
                        if c.in_transaction:
                            c.execute("ROLLBACK")
                        raise
                    time.sleep(pause_s / 5)
            truncated = self._truncate_wal(c)
        except sqlite3.DatabaseError as exc:
            raise self._error("write", exc) from None
        return {"path": str(self.path), "removed": ev["removed"], "file_bytes_before": before,
                "file_bytes_after": self.file_bytes(), "counted_bytes": self.total_size(),
                "max_bytes": self.max_bytes, "vacuum": how, "wal_truncated": truncated,
                "elapsed_s": round(time.perf_counter() - t0, 3)}

    @staticmethod
    def _truncate_wal(c: sqlite3.Connection) -> bool:
        """Copy the WAL into the database and truncate it to 0 bytes; True when done.

        A TRUNCATE checkpoint waits for readers and writers (busy handler) but returns busy at once
        when another connection is checkpointing (a put's background PASSIVE checkpoint right after
        heavy writes): then the vacuumed pages would stay in the WAL and the file look bigger than
        before. Retried TRUNCATE_TRIES times; False = the WAL is still there (the next checkpoint
        shrinks it)."""
        for _ in range(TRUNCATE_TRIES):
            busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return True
            time.sleep(TRUNCATE_RETRY_S)
        return False

    def file_bytes(self) -> int:
        """Bytes on disk: the database file plus its WAL."""
        total = 0
        for p in (self.path, Path(f"{self.path}-wal")):
            try:
                total += os.path.getsize(p)
            except OSError:
                pass
        return total

    # ---------------------------------------------------------------- maintenance
    def stats(self) -> dict:
        """Path, entries and counted bytes per namespace/tool, total, file size, limit: O(1) in entries."""
        try:
            st = self._fresh()
            c = st.c
            if st.legacy:  # schema-1 file opened read-only: no counters, scan it
                per = c.execute("SELECT namespace, tool, COUNT(*), COALESCE(SUM(size), 0) FROM entries"
                                " GROUP BY namespace, tool ORDER BY namespace, tool").fetchall()
                entries, size = sum(r[2] for r in per), sum(r[3] for r in per)
                memo = c.execute("SELECT COUNT(*) FROM file_hashes").fetchone()[0]
            else:
                per = c.execute("SELECT namespace, tool, entries, bytes FROM tally WHERE entries > 0"
                                " ORDER BY namespace, tool").fetchall()
                meta = dict(c.execute("SELECT name, value FROM meta").fetchall())
                entries, size, memo = int(meta["entries"]), int(meta["total_size"]), int(meta["memo_files"])
            page_size = c.execute("PRAGMA page_size").fetchone()[0]
            free_pages = c.execute("PRAGMA freelist_count").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None
        return {
            "path": str(self.path),
            "entries": entries,
            "bytes": size,
            "file_bytes": self.file_bytes(),
            "free_bytes": int(free_pages) * int(page_size),
            "max_bytes": self.max_bytes,
            "read_only": st.read_only,
            "by_tool": [
                {"namespace": ns, "tool": tool, "entries": int(n), "bytes": int(b)} for ns, tool, n, b in per
            ],
            "memo_files": memo,
        }

    def clear(self, namespace: str | None = None, tool: str | None = None) -> int:
        """Delete entries (all, or one namespace/tool); returns how many were removed."""
        if namespace is not None:
            check_namespace(namespace)
        where, args = [], []
        if namespace is not None:
            where.append("namespace=?")
            args.append(namespace)
        if tool is not None:
            where.append("tool=?")
            args.append(tool)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        try:
            c = self._writer()
            with transaction(c):
                if not where:
                    n = int(c.execute("SELECT value FROM meta WHERE name='entries'").fetchone()[0])
                    for table in ("entries", "tally", "file_hashes"):
                        c.execute(f"DELETE FROM {table}")
                    c.execute("UPDATE meta SET value=0 WHERE name IN ('total_size', 'entries', 'memo_files')")
                    self._memo.clear()
                else:
                    per = c.execute(f"SELECT namespace, tool, COUNT(*), SUM(size) FROM entries{cond}"
                                    " GROUP BY namespace, tool", args).fetchall()
                    c.execute(f"DELETE FROM entries{cond}", args)
                    self._apply_deltas(c, {(ns, t): [-k, -b] for ns, t, k, b in per})
                    n = sum(r[2] for r in per)
            if not where:
                self._give_back_pages(c)
                # What is left is a few pages: check them, so a damaged file is not reported as cleared.
                if c.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("database disk image is malformed")
        except sqlite3.DatabaseError as exc:
            raise self._error("write", exc) from None
        return int(n)

    def _give_back_pages(self, c: sqlite3.Connection) -> None:
        try:
            if c.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
                c.executescript("PRAGMA incremental_vacuum;")  # all free pages (execute() would free one)
            else:
                c.execute("VACUUM")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass  # another process is reading: space is reused later instead

    def move_aside(self) -> Path:
        """Rename a damaged cache file (and its -wal/-shm) to `<name>.damaged-<UTC time>`; returns the
        new path of the file. The next use starts a new, empty cache at the original path."""
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            os.replace(self.path, dest)
            for suffix in ("-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, Path(f"{dest}{suffix}"))
        except OSError as exc:
            raise CacheNotWritable(f"cannot move the damaged cache {self.path} aside: {exc.strerror}; "
                                   f"set ${CACHE_DIR_ENV} to another folder") from None
        self._memo.clear()
        return dest

    def integrity_check(self) -> str:
        try:
            return self._fresh().c.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    def keys(self, namespace: str | None = None) -> list[str]:
        try:
            c = self._fresh().c
            if namespace is None:
                return [r[0] for r in c.execute("SELECT key FROM entries")]
            return [r[0] for r in c.execute("SELECT key FROM entries WHERE namespace=?", (namespace,))]
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None

    def existing(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are stored (for resumable batches)."""
        keys = list(keys)
        found: set[str] = set()
        try:
            c = self._fresh().c
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key FROM entries WHERE key IN ({','.join('?' * len(chunk))})"
                found.update(r[0] for r in c.execute(q, chunk))
        except sqlite3.DatabaseError as exc:
            raise self._error("read", exc) from None
        return found
