"""textrouter: a tiny text router that picks `direct` or one audio tool per question.

Importing this package is cheap: nothing heavy (onnxruntime, tokenizers, torch, transformers)
is imported until a function needs it. Routing (`load_router`) uses only onnxruntime +
tokenizers + numpy and applies the folder's decision rule (textrouter.decision: call a tool
only when p(tool) - p(direct) clears a fitted margin; `load_router(margin=, max_tool_rate=)`);
training/export (textrouter.training -> selection -> grpo -> encoders -> model/static/embed_cache,
textrouter.export) need the `[train]` extra and import torch inside their functions.
"""
from __future__ import annotations

from typing import Any

from textrouter import errors
from textrouter.errors import RouterError, RouterLoadError, TableError
from textrouter.text import format_input

__all__ = ["load_router", "available_routers", "format_input", "Router", "errors",
           "RouterError", "RouterLoadError", "TableError", "DEFAULT_ROUTER_DIR"]

_LAZY = {"load_router", "available_routers", "Router", "DEFAULT_ROUTER_DIR"}


def __getattr__(name: str) -> Any:
    # Lazy: textrouter.runtime itself imports onnxruntime/tokenizers only inside functions, but
    # keeping it out of `import textrouter` keeps the import graph minimal for training code too.
    if name in _LAZY:
        from textrouter import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'textrouter' has no attribute {name!r}")
