"""The tool registry dict. Each module in this package defines `SPECS: list[ToolSpec]`.

Importing this package imports only the tool modules (cheap): model libraries load lazily
inside each tool's compute function.
"""
from __future__ import annotations

from toolcache.registry import ToolSpec
from toolcache.tools import asr, chords, embedding, features, sound, speakers

# Registry order is the display order of `audiorouter tools list`.
TOOLS: dict[str, ToolSpec] = {spec.name: spec for mod in (asr, speakers, sound, embedding, chords, features) for spec in mod.SPECS}
