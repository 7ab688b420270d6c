"""Known-answer clips for the speech and sound tools (deterministic, no downloads).

Everything is 16 kHz mono float32 in [-1, 1] unless stated:

- clip(samples):               wrap samples as a toolcache AudioClip (sha256 of the float32 bytes)
- silence / white_noise / tone: synthetic non-speech (noise level and tone RMS in dBFS re 1.0)
- espeak(text, path):          an espeak-ng sentence written to `path` (None when espeak-ng is absent)
- stm_text(path):              the words of an .stm transcript, in order (speaker/times dropped)
- stm_first_start(path):       start time (s) of the first .stm utterance
- bird_sandwich(birds_path):   3 s digital silence + 3 s of the bird recording + 3 s silence
- random_whisper_checkpoint:   a tiny randomly initialised openai-whisper checkpoint (.pt)
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from toolcache.registry import AudioClip

SR = 16000  # Hz


def clip(samples: np.ndarray, sr: int = SR, path: str = "<memory>") -> AudioClip:
    x = np.ascontiguousarray(samples, dtype=np.float32)
    return AudioClip(path=path, sha256=hashlib.sha256(x.tobytes()).hexdigest(), samples=x, sample_rate=sr,
                     duration_s=x.size / sr, original_duration_s=x.size / sr, original_sample_rate=sr,
                     channels=1, truncated=False)


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    return np.zeros(int(round(seconds * sr)), dtype=np.float32)


def white_noise(seconds: float, dbfs: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Gaussian white noise whose RMS is `dbfs` dB re 1.0."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * sr))) * 10 ** (dbfs / 20)).astype(np.float32)


def tone(freq_hz: float, seconds: float, dbfs: float = -20.0, sr: int = SR) -> np.ndarray:
    """A pure sine whose RMS is `dbfs` dB re 1.0."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (10 ** (dbfs / 20) * np.sqrt(2) * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, path: Path, voice: str = "en-us", words_per_minute: int = 150) -> Path | None:
    """Write `text` spoken by espeak-ng to `path` (22.05 kHz WAV); None when espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
                   check=True, capture_output=True, timeout=60)
    return Path(path)


def _stm_rows(path: Path) -> list[list[str]]:
    # STM: <file> <channel> <speaker> <start> <end> <words...>
    return [line.split(None, 5) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def stm_text(path: Path) -> str:
    return " ".join(row[5].strip() for row in _stm_rows(path) if len(row) == 6)


def stm_first_start(path: Path) -> float:
    return min(float(row[3]) for row in _stm_rows(path))


def bird_sandwich(birds_path: Path, bird_from_s: float = 2.0, bird_s: float = 3.0) -> np.ndarray:
    """3 s silence + `bird_s` s of the bird recording (from `bird_from_s`, its densest calls) + 3 s silence."""
    from toolcache.audio import load_audio

    birds = load_audio(birds_path, sample_rate=SR).samples
    a = int(round(bird_from_s * SR))
    part = birds[a:a + int(round(bird_s * SR))]
    return np.concatenate([silence(3.0), part, silence(3.0)]).astype(np.float32)


def random_whisper_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny random Whisper in openai-whisper's checkpoint format ({"dims", "model_state_dict"}).

    English-only vocabulary (n_vocab 51864) so the bundled gpt2 tiktoken file is used; 1500 audio
    positions because Whisper always pads to 30 s; a short text context (64) keeps decoding fast.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=1)
    torch.save({"dims": dims.__dict__, "model_state_dict": Whisper(dims).state_dict()}, path)
    return Path(path)
