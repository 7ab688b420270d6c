"""Turn domain exceptions into one-line messages and non-zero exit codes.

Library packages raise their own exception types (they never print or exit); every CLI command
runs its body under :func:`friendly_errors`, which prints ``error: <what> (<fix>)`` on stderr and
exits with a code that tells the class of failure apart.
"""
from __future__ import annotations

import contextlib
import os
import re
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


# Environment variables whose values are secrets: never printed, whatever message quotes them.
SECRET_ENV_VARS = ("OPENAI_API_KEY",)
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")


def mask_secrets(text: str) -> str:
    """`text` with credentials replaced by ***: URL userinfo, bearer tokens, and the values of
    SECRET_ENV_VARS (an API key a server or proxy quoted back)."""
    text = _USERINFO_RE.sub(r"\g<scheme>***@", str(text))
    text = _BEARER_RE.sub(r"\g<1>***", text)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= 4:  # a 1-3 character "secret" would mask ordinary words
            text = text.replace(value, "***")
    return text


def fail(message: str, code: int = EXIT_BAD_INPUT) -> "typer.Exit":
    """Print a one-line error (secrets masked) and return the Exit to raise."""
    line = mask_secrets(" ".join(str(message).split()))  # one line, whatever the exception text held
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
