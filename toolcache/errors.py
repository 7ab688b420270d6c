"""Domain exceptions of toolcache. Messages name the file, the problem and the fix, on one line."""


class ToolcacheError(Exception):
    """Base class for every toolcache error."""


class AudioError(ToolcacheError):
    """The audio file is missing, empty, corrupt, not audio, or unreadable."""


class UnknownToolError(ToolcacheError):
    """No tool of that name; the message lists available_tools()."""


class ToolFailed(ToolcacheError):
    """A tool's backend raised while computing; never cached as a result."""


class CacheError(ToolcacheError):
    """The cache file cannot be opened, read or written (toolcache.cache re-exports it)."""


class CacheCorrupt(CacheError):
    """The cache file is damaged; `audiorouter cache clear` moves it aside and starts a new one."""


class CacheNotWritable(CacheError):
    """The cache cannot store anything (read-only file/folder, disk full); reads may still work.

    `.reason` is "read-only" or "disk full". Stop computing: nothing more can be cached."""

    def __init__(self, message: str, reason: str = "read-only"):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep .reason across a process pool (default pickling passes args only)
        return (type(self), (str(self), self.reason))
