"""The routers shipped inside the package: a plain dict registry, `available_routers()`.

Shared by textrouter.folder (its "folder does not exist" message lists the names) and
textrouter.runtime (`load_router("fast")`), so neither imports the other for it. Standard library
only; the folders are built by scripts/build_default_router.py.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROUTER_DIR = Path(__file__).resolve().parent / "default_router"
FAST_ROUTER_DIR = Path(__file__).resolve().parent / "fast_router"
# name -> folder. default: MiniLM-L6 + head (~9 ms per question on 1 core, int8, 23 MB);
# fast: minilm-static, a token table distilled from the same MiniLM (~0.3 ms, 858 KB); both are
# `train`'s default (category mixture head) on the bundled table for direct vs asr and route
# within a point of each other under nested CV (docs/router-runtime.md).
BUNDLED_ROUTERS: dict[str, Path] = {"default": DEFAULT_ROUTER_DIR, "fast": FAST_ROUTER_DIR}


def available_routers() -> list[str]:
    """Names of the routers bundled with the package (usable as `load_router(name)`)."""
    return sorted(BUNDLED_ROUTERS)


def resolve_router_path(path: str | os.PathLike | None) -> Path:
    """None / a bundled name -> the bundled folder; anything else is a folder path."""
    if path is None:
        return BUNDLED_ROUTERS["default"]
    if isinstance(path, str) and path in BUNDLED_ROUTERS and not Path(path).exists():
        return BUNDLED_ROUTERS[path]
    return Path(path).expanduser()
