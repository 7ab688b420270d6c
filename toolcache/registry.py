"""The tool registry: one plain dict of ToolSpec, filled by `toolcache.tools`.

A tool is a pure function of decoded audio and parameters. Everything the cache key needs
(name, version, backend/model id, params) is on the spec, so a changed model or version misses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from toolcache.errors import UnknownToolError


@dataclass(frozen=True)
class AudioClip:
    """Decoded audio handed to a tool.

    samples: 1-D float32 mono in [-1, 1] at `sample_rate` Hz (the spec's rate, 16 kHz by default).
    duration_s: seconds actually decoded (≤ max length); original_duration_s: the file's length.
    """

    path: str
    sha256: str                  # hex sha256 of the file's bytes (the cache's audio identity)
    samples: np.ndarray
    sample_rate: int             # Hz of `samples`
    duration_s: float
    original_duration_s: float
    original_sample_rate: int
    channels: int                # channels in the file before the mono down-mix
    truncated: bool              # True when only the first `duration_s` seconds were decoded
    # Seconds the file's header announces when the file holds less (a cut download or copy);
    # None when the header and the data agree (or the format has no length in its header).
    header_duration_s: float | None = None


@dataclass(frozen=True)
class ToolSpec:
    """One tool. `compute(clip, **params) -> dict` returns the JSON-able `result` part only."""

    name: str
    description: str                          # what it measures, one line (shown by `tools list`)
    version: str                              # bump when the output changes: old cache rows then miss
    limits: str                               # capability boundary: what the tool cannot tell
    compute: Callable[..., dict]
    backend: Callable[[Mapping[str, Any]], str]   # backend + model id for these params (cheap: no model load)
    default_params: Mapping[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000                  # Hz the tool wants its samples at


_TOOLS: list[dict[str, ToolSpec]] = []  # the TOOLS dict once imported (same object: edits show up)


def _registry() -> dict[str, ToolSpec]:
    if not _TOOLS:
        from toolcache.tools import TOOLS  # lazy: keeps `import toolcache` light

        _TOOLS.append(TOOLS)
    return _TOOLS[0]


def available_tools() -> list[str]:
    """Names of every registered tool, in registry order."""
    return list(_registry())


def get_tool(name: str) -> ToolSpec:
    """The spec for `name`, or UnknownToolError listing the valid names."""
    tools = _registry()
    if name not in tools:
        raise UnknownToolError(
            f"unknown tool {name!r}; available tools: {', '.join(tools)} (see `audiorouter tools list`)"
        )
    return tools[name]


def package_version(dist: str) -> str:
    """An installed distribution's version for backend ids ("missing" when not installed): cheap,
    reads package metadata only."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"
