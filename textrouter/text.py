"""The router's text input: one function shared by training, export and the ONNX runtime.

The router sees only the question and its choices (never task metadata), so the same text is
available at training time (from an outcome table) and at run time (from a user's command line).
"""
from __future__ import annotations

from typing import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_input(question: str, choices: Sequence[str] | None = None) -> str:
    """`Question: ...\\nChoices: (A) x (B) y` — whitespace collapsed, choices optional."""
    q = " ".join(str(question).split())
    text = f"Question: {q}"
    if choices:
        opts = " ".join(f"({LETTERS[i % 26]}) {' '.join(str(c).split())}" for i, c in enumerate(choices))
        text += f"\nChoices: {opts}"
    return text
