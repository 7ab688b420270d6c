"""Domain exceptions of reasoner. Messages name the problem and the fix, on one line."""


class ReasonerError(Exception):
    """Base class for every reasoner error (bad configuration, unknown back-end, ...)."""


class ReasonerUnavailable(ReasonerError):
    """The reasoner could not be reached or kept failing (timeouts, 5xx, dropped connections)."""


class ReasonerTimeout(ReasonerUnavailable):
    """The reasoner did not answer within the timeout after all retries."""
