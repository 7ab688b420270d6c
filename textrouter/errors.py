"""Domain exceptions of textrouter. Messages name the problem and the fix, on one line."""


class RouterError(Exception):
    """Base class: anything wrong with a router, its folder or an outcome table."""


class RouterLoadError(RouterError):
    """A router folder is missing, corrupt, foreign or mismatched with its metadata."""


class TableError(RouterError):
    """An outcome table is malformed, or an action mapping names an unknown column."""
