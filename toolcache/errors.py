"""Domain exceptions of toolcache. Messages name the file, the problem and the fix, on one line."""


class ToolcacheError(Exception):
    """Base class for every toolcache error."""


class AudioError(ToolcacheError):
    """The audio file is missing, empty, corrupt, not audio, or unreadable."""


class UnknownToolError(ToolcacheError):
    """No tool of that name; the message lists available_tools()."""


class ToolFailed(ToolcacheError):
    """A tool's backend raised while computing; never cached as a result."""
