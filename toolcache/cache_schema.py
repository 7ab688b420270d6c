"""The SQLite layout of the cache file (toolcache.cache): schema 2, what one entry counts, the
migration from schema 1, and the mapping of sqlite3 errors to causes.

Schema 2: `entries` is a rowid table (new rows append at the b-tree's right edge, so pages stay
dense and LRU eviction, oldest first, frees whole pages) with the value as its last column (the
small columns are read without touching its overflow pages), a unique index on the key, and the
covering eviction index `entries_lru(last_used, size)` (+ rowid). `tally` (per namespace/tool) and
`meta` (total_size, entries, memo_files) are the counters `cache stats` reads.
"""
from __future__ import annotations

import sqlite3

CACHE_DIR_ENV = "AUDIOROUTER_CACHE_DIR"
NAMESPACES = ("tool", "reasoner")
BUSY_TIMEOUT_MS = 30_000             # wait up to 30 s for another process's write lock
PAGE_BYTES = 4096                    # page size of new files (set explicitly: entry_size() assumes it)
ROW_FIXED_B = 110                    # record bytes besides value and key: header, namespace, tool, sha256, numbers
INDEX_OVERHEAD_B = 120               # the key index (64-char key + rowid) and LRU index entries, with b-tree slack
SCHEMA_VERSION = 2

ENTRIES_DDL = """
CREATE TABLE IF NOT EXISTS {name} (
    id           INTEGER PRIMARY KEY,   -- rowid: new rows go to the right edge, pages stay dense
    key          TEXT NOT NULL UNIQUE,
    namespace    TEXT NOT NULL,
    tool         TEXT NOT NULL,
    audio_sha256 TEXT,
    size         INTEGER NOT NULL,      -- counted bytes: entry_size(key, value)
    created      REAL NOT NULL,
    last_used    REAL NOT NULL,
    value        TEXT NOT NULL          -- last: small columns are read without its overflow pages
)"""
SCHEMA = [
    ENTRIES_DDL.format(name="entries"),
    "CREATE INDEX IF NOT EXISTS entries_lru ON entries(last_used, size)",  # + rowid: covering for eviction
    "CREATE TABLE IF NOT EXISTS tally (namespace TEXT NOT NULL, tool TEXT NOT NULL, entries INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL, PRIMARY KEY (namespace, tool)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID",
    "INSERT OR IGNORE INTO meta(name, value) VALUES ('total_size', 0), ('entries', 0), ('memo_files', 0)",
    """CREATE TABLE IF NOT EXISTS file_hashes (
    path     TEXT PRIMARY KEY,
    dev      INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    hashed   REAL NOT NULL
) WITHOUT ROWID""",
]


def check_namespace(namespace: str) -> None:
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown cache namespace {namespace!r}; valid: {', '.join(NAMESPACES)}")


def entry_size(key: str, text: str) -> int:
    """Counted bytes of one entry: the disk space its row and index entries take.

    SQLite (4096-byte pages, rowid table) keeps a record of P bytes whole in a leaf page when
    P <= 4061 (leaf pages then hold floor(4088 / (P + 4)) such cells), else spills full 4092-byte
    overflow pages and keeps the remainder in the leaf. Plus INDEX_OVERHEAD_B for the key and LRU
    index entries. Exact to within page slack (bench_scaling measures file / count after compact).
    """
    p = len(text.encode("utf-8")) + len(key) + ROW_FIXED_B
    usable = PAGE_BYTES
    max_local = usable - 35
    if p <= max_local:
        table = usable / max(1, (usable - 8) // (p + 4))
    else:
        min_local = (usable - 12) * 32 // 255 - 23
        local = min_local + (p - min_local) % (usable - 4)
        if local > max_local:
            local = min_local
        table = -(-(p - local) // (usable - 4)) * usable + local + 4
    return int(table) + INDEX_OVERHEAD_B


def migrate_v1(c: sqlite3.Connection) -> None:
    """Schema 1 (WITHOUT ROWID, value before the small columns, no counters) -> 2, in the caller's tx.

    Rows are copied in LRU order (oldest first, so eviction frees whole pages), sizes recounted
    with entry_size(), counters rebuilt. The caller then (best effort, outside the tx) runs VACUUM to
    switch the file to auto_vacuum=INCREMENTAL.
    """
    c.execute(ENTRIES_DDL.format(name="entries_v2"))
    c.execute(
        "INSERT INTO entries_v2(key, namespace, tool, audio_sha256, size, created, last_used, value)"
        " SELECT key, namespace, tool, audio_sha256, 0, created, last_used, value FROM entries"
        " ORDER BY last_used")
    last = 0
    while True:  # sizes in chunks of 1000 rows (values are not all held in memory)
        chunk = c.execute("SELECT id, key, value FROM entries_v2 WHERE id > ? ORDER BY id LIMIT 1000",
                          (last,)).fetchall()
        if not chunk:
            break
        c.executemany("UPDATE entries_v2 SET size=? WHERE id=?", [(entry_size(k, v), i) for i, k, v in chunk])
        last = chunk[-1][0]
    c.execute("DROP TABLE entries")
    c.execute("ALTER TABLE entries_v2 RENAME TO entries")
    for stmt in SCHEMA[1:]:
        c.execute(stmt)
    c.execute("INSERT INTO tally(namespace, tool, entries, bytes) SELECT namespace, tool, COUNT(*), SUM(size)"
              " FROM entries GROUP BY namespace, tool")
    n, total = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
    memo = c.execute("SELECT COUNT(*) FROM file_hashes").fetchone()[0]
    c.executemany("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)",
                  [("total_size", total), ("entries", n), ("memo_files", memo),
                   ("schema_version", SCHEMA_VERSION)])


def error_kind(exc: BaseException) -> str:
    """corrupt | full | read-only | busy | cantopen | io | other, from the SQLite result code."""
    name = (getattr(exc, "sqlite_errorname", None) or "").upper()
    msg = str(exc).lower()
    if isinstance(exc, (ValueError, UnicodeError)) or "could not decode" in msg:
        return "corrupt"  # a stored value that is not valid UTF-8 / JSON
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in msg or "not a database" in msg:
        return "corrupt"
    if name.startswith("SQLITE_FULL") or "disk is full" in msg:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly" in msg or "read-only" in msg:
        return "read-only"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in msg:
        return "busy"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in msg:
        return "cantopen"
    if name.startswith("SQLITE_IOERR") or "disk i/o" in msg:
        return "io"
    return "other"


def error_code(exc: BaseException) -> str:
    """A safe short name for the error: never the exception text (it can quote stored content)."""
    return getattr(exc, "sqlite_errorname", None) or type(exc).__name__


class transaction:
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
