"""Turn domain exceptions into one-line messages and non-zero exit codes.

Library packages raise their own exception types (they never print or exit); every CLI command
runs its body under :func:`friendly_errors`, which prints ``error: <what> (<fix>)`` on stderr and
exits with a code that tells the class of failure apart.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import typer

# Exit codes: 1 = unexpected bug, 2 = bad input / usage, 3 = a peer (reasoner server) failed,
# 130 = interrupted by the user (what a shell reports for SIGINT).
EXIT_BAD_INPUT = 2
EXIT_PEER = 3
EXIT_INTERRUPTED = 130


def _domain_error_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(bad-input errors, peer errors), imported lazily so `--help` stays fast."""
    from reasoner.errors import ReasonerError, ReasonerUnavailable
    from textrouter.errors import RouterError
    from toolcache.errors import ToolcacheError

    bad_input = (ToolcacheError, RouterError, ReasonerError, ValueError, FileNotFoundError,
                 IsADirectoryError, PermissionError)
    peer = (ReasonerUnavailable,)
    return bad_input, peer


def fail(message: str, code: int = EXIT_BAD_INPUT) -> "typer.Exit":
    """Print a one-line error and return the Exit to raise."""
    line = " ".join(str(message).split())  # one line, whatever the exception text held
    print(f"error: {line}", file=sys.stderr)
    return typer.Exit(code)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Context manager for a command body: domain errors become one line + exit code."""
    bad_input, peer = _domain_error_types()
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted; everything written so far is kept (re-run the same command to resume)",
                   EXIT_INTERRUPTED)
    except peer as exc:  # checked before bad_input: ReasonerUnavailable is a ReasonerError
        raise fail(str(exc), EXIT_PEER)
    except bad_input as exc:
        raise fail(str(exc) or type(exc).__name__, EXIT_BAD_INPUT)
