"""Placeholder: SPECS is filled by the tool implementation."""
from __future__ import annotations

SPECS: list = []
