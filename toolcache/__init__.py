"""toolcache: audio tools (ASR, sound events, chords, features) behind a content-addressed cache.

    import toolcache
    out = toolcache.run("audio_features", "clip.wav")   # envelope dict, see ARCHITECTURE.md
    toolcache.available_tools()                          # ['asr', 'sound_events', ...]

Importing this package is cheap: numpy/soundfile/sqlite load on first use of `run`, `Cache` or
`load_audio`, and model libraries (faster_whisper, onnxruntime, librosa) only when a tool computes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from toolcache.errors import AudioError, ToolcacheError, ToolFailed, UnknownToolError

# name -> module that defines it; resolved on first attribute access (PEP 562).
_LAZY = {
    "run": "toolcache.api",
    "lookup": "toolcache.api",
    "run_many": "toolcache.api",
    "cache_key": "toolcache.api",
    "available_tools": "toolcache.registry",
    "get_tool": "toolcache.registry",
    "ToolSpec": "toolcache.registry",
    "AudioClip": "toolcache.registry",
    "Cache": "toolcache.cache",
    "CacheError": "toolcache.cache",
    "open_cache": "toolcache.cache",
    "default_cache_dir": "toolcache.cache",
    "load_audio": "toolcache.audio",
    "file_sha256": "toolcache.audio",
}

__all__ = ["AudioError", "ToolcacheError", "ToolFailed", "UnknownToolError", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from toolcache.api import cache_key, lookup, run, run_many
    from toolcache.audio import file_sha256, load_audio
    from toolcache.cache import Cache, CacheError, default_cache_dir, open_cache
    from toolcache.registry import AudioClip, ToolSpec, available_tools, get_tool


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'toolcache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
