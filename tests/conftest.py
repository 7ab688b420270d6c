"""Shared fixtures. Every test gets its own cache directory: nothing touches ~/.cache."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES_AUDIO = REPO / "examples" / "audio"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    cache_dir = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("AUDIOROUTER_CACHE_DIR", str(cache_dir))
    return cache_dir


@pytest.fixture
def cache_dir(_isolated_cache) -> Path:
    return _isolated_cache


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    return EXAMPLES_AUDIO / "speech-two-speakers.wav"


@pytest.fixture(scope="session")
def birds_wav() -> Path:
    return EXAMPLES_AUDIO / "birds-10s.wav"
