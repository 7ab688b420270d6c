"""The `__main__` of a bench script: exit with main()'s code; Ctrl-C is one line and exit 130."""
from __future__ import annotations

import sys
from typing import Callable


def run(main: Callable[[], int], interrupted: str = "rerun the bench") -> None:
    """sys.exit(main()); a KeyboardInterrupt prints `error: interrupted; <interrupted>` (what to do next)."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted}", file=sys.stderr)
        code = 130
    sys.exit(code)
