"""Known-answer music clips synthesised with numpy (no downloads, deterministic).

Everything returns 1-D float32 mono samples in [-1, 1]; `sr` is in Hz. Used by the tests of the
`audio_features` and `chords` tools and by bench/ scripts:

- click_track(bpm):      short decaying 1 kHz clicks on every beat (known tempo)
- tone(freq_hz):         a sine at a known pitch and RMS level (dBFS, re an RMS of 1.0)
- progression(labels):   piano-like triads (harmonics, exponential decay), one chord per
                         `seconds_per_chord`; block or arpeggio, optional 7ths, inversions,
                         percussion and white noise at a given SNR
- clip(samples, sr):     wrap samples as a toolcache AudioClip (sha256 of the float32 bytes)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
_ALIASES = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
# Intervals in semitones above the root.
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
             "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7)}


def db_to_amp(db: float) -> float:
    """Linear amplitude of a level in dB re 1.0."""
    return float(10.0 ** (db / 20.0))


def midi_to_hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69) / 12.0))


def tone(freq_hz: float, duration_s: float, sr: int = 22050, rms_dbfs: float = -20.0) -> np.ndarray:
    """A pure sine whose RMS is `rms_dbfs` dB re 1.0 (a sine's peak is RMS * sqrt(2))."""
    t = np.arange(int(round(duration_s * sr))) / sr
    amp = db_to_amp(rms_dbfs) * np.sqrt(2.0)
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def click_track(bpm: float, duration_s: float, sr: int = 22050, click_s: float = 0.03,
                freq_hz: float = 1000.0, accent_every: int = 4) -> np.ndarray:
    """Clicks at exactly `bpm` beats per minute, starting at t = 0.1 s; every `accent_every`-th louder."""
    n = int(round(duration_s * sr))
    y = np.zeros(n, dtype=np.float64)
    m = int(round(click_s * sr))
    tt = np.arange(m) / sr
    click = np.sin(2 * np.pi * freq_hz * tt) * np.exp(-tt / (click_s / 5))
    period = 60.0 / bpm
    k = 0
    while True:
        start = int(round((0.1 + k * period) * sr))
        if start >= n:
            break
        gain = 0.8 if (accent_every and k % accent_every == 0) else 0.5
        end = min(n, start + m)
        y[start:end] += gain * click[: end - start]
        k += 1
    return y.astype(np.float32)


DRUM_STYLES = ("rock", "hiphop", "four-on-the-floor")


def drum_pattern(bpm: float, duration_s: float, style: str = "rock", sr: int = 22050, seed: int = 0,
                 jitter_ms: float = 8.0) -> np.ndarray:
    """A synthetic drum loop whose beat is `bpm`, plus a quiet bass line changing every bar; peak 0.5.

    rock: kick on beats 1 and 3, snare on 2 and 4, closed hi-hat on every eighth note;
    hiphop: kick on 1 and the "and" of 2, snare on 3, hi-hat sixteenths (a half-time feel);
    four-on-the-floor: kick on every beat, snare on 2 and 4, hi-hat on the off-beats.
    Every hit is shifted by a normal timing jitter (sd `jitter_ms`, a drummer's looseness)."""
    if style not in DRUM_STYLES:
        raise ValueError(f"style {style!r} unknown; valid: {', '.join(DRUM_STYLES)}")
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    y = np.zeros(n + sr)

    def env(seconds, decay):
        t = np.arange(int(seconds * sr)) / sr
        return t, np.exp(-t * decay)

    t, e = env(0.15, 25.0)
    kick = np.sin(2 * np.pi * np.cumsum(120 * np.exp(-t * 30) + 45) / sr) * e   # pitch drop 165 -> 45 Hz
    t, e = env(0.12, 35.0)
    snare = (0.6 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 190 * t)) * e
    t, e = env(0.04, 120.0)
    hat = 0.3 * rng.standard_normal(t.size) * e

    def put(x, at_s, gain=1.0):
        i = int(round((at_s + rng.normal(0.0, jitter_ms / 1000.0)) * sr))
        if 0 <= i < y.size - x.size:
            y[i:i + x.size] += gain * x

    beat = 60.0 / bpm
    for b in range(int(duration_s / beat)):
        at = 0.1 + b * beat
        if style == "rock":
            put(kick, at) if b % 2 == 0 else put(snare, at, 0.8)
            put(hat, at)
            put(hat, at + beat / 2)
        elif style == "hiphop":
            if b % 4 == 0:
                put(kick, at)
            if b % 4 == 1:
                put(kick, at + beat / 2, 0.7)
            if b % 4 == 2:
                put(snare, at)
            for k in range(4):
                put(hat, at + k * beat / 4, 0.5)
        else:
            put(kick, at)
            put(hat, at + beat / 2)
            if b % 2:
                put(snare, at, 0.6)
    tt = np.arange(y.size) / sr
    y += 0.05 * np.sin(2 * np.pi * 55 * tt * (1 + 0.5 * ((tt // (4 * beat)) % 2)))
    y = y[:n]
    return (0.5 * y / np.max(np.abs(y))).astype(np.float32)


def parse_label(label: str) -> tuple[int, str]:
    """'A:min' -> (9, 'min'); accepts flats ('Bb:maj')."""
    root, _, quality = label.partition(":")
    root = _ALIASES.get(root, root)
    if root not in PITCH_CLASSES or quality not in QUALITIES:
        raise ValueError(f"bad chord label {label!r}; use ROOT:QUALITY with ROOT in {PITCH_CLASSES} "
                         f"and QUALITY in {list(QUALITIES)}")
    return PITCH_CLASSES.index(root), quality


def piano_note(freq_hz: float, duration_s: float, sr: int = 22050, n_harmonics: int = 6,
               decay_s: float = 1.2) -> np.ndarray:
    """Additive piano-like note: harmonics with 1/k amplitudes, exponential decay, 5 ms attack."""
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * freq_hz >= sr / 2:
            break
        # Higher partials decay faster, as on a struck string.
        y += (1.0 / k) * np.sin(2 * np.pi * k * freq_hz * t) * np.exp(-t * k / decay_s)
    attack = np.minimum(1.0, t / 0.005)
    return y * attack


def chord_tones(label: str, octave: int = 4, seventh: bool = False, inversion: int = 0) -> list[float]:
    """Frequencies of a triad with the root in `octave`, plus the root an octave below as bass.

    seventh=True adds the minor seventh (C:maj -> C7, A:min -> Am7: still labelled as the triad);
    inversion=1/2 moves the lowest 1/2 upper notes up an octave (the bass stays the root).
    """
    root, quality = parse_label(label)
    base = 12 * (octave + 1) + root  # MIDI number of the root (C4 = 60)
    upper = [base + iv for iv in QUALITIES[quality]] + ([base + 10] if seventh else [])
    for i in range(min(inversion, len(upper) - 1)):
        upper[i] += 12
    return [midi_to_hz(m) for m in [base - 12] + upper]


def progression(labels: list[str], seconds_per_chord: float = 2.0, sr: int = 22050,
                octave: int = 4, snr_db: float | None = None, seed: int = 0, style: str = "block",
                seventh: bool = False, inversion: int = 0, drums_bpm: float | None = None) -> np.ndarray:
    """Chords in sequence; peak-normalised to 0.5; optional white noise at `snr_db`.

    style "block": all notes struck together at each chord start; "arpeggio": the chord's notes
    struck one after another every quarter of a beat at 120 BPM (0.125 s), each ringing on.
    drums_bpm adds a loud click track (percussion) at that tempo before the noise.
    """
    if style not in ("block", "arpeggio"):
        raise ValueError(f"style={style!r}; use 'block' or 'arpeggio'")
    seg = int(round(seconds_per_chord * sr))
    out = np.zeros(seg * len(labels))
    for i, label in enumerate(labels):
        freqs = chord_tones(label, octave, seventh, inversion)
        chord = np.zeros(seg)
        for j, f in enumerate(freqs):
            delay = 0 if style == "block" else int(round(0.125 * j * sr)) % seg
            chord[delay:] += piano_note(f, (seg - delay) / sr, sr)[: seg - delay]
        out[i * seg:(i + 1) * seg] = chord
    out *= 0.5 / max(1e-9, np.max(np.abs(out)))
    if drums_bpm:
        out = out + 0.8 * click_track(drums_bpm, out.size / sr, sr, freq_hz=70.0)[: out.size]
        out *= 0.5 / max(1e-9, np.max(np.abs(out)))
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        sig_rms = np.sqrt(np.mean(out ** 2))
        out = out + rng.standard_normal(out.size) * sig_rms * db_to_amp(-snr_db)
        out = np.clip(out, -1.0, 1.0)
    return out.astype(np.float32)


def reference_frames(labels: list[str], seconds_per_chord: float, times_s: np.ndarray) -> list[str]:
    """Ground-truth label at each time (seconds) for a clip built by `progression`."""
    idx = np.minimum((np.asarray(times_s) // seconds_per_chord).astype(int), len(labels) - 1)
    return [labels[i] for i in idx]


def silence(duration_s: float, sr: int = 22050) -> np.ndarray:
    return np.zeros(int(round(duration_s * sr)), dtype=np.float32)


def clip(samples: np.ndarray, sr: int = 22050, path: str = "<synthetic>"):
    """A toolcache AudioClip for these samples (mono, already at the tool's rate)."""
    from toolcache.registry import AudioClip

    samples = np.asarray(samples, dtype=np.float32)
    dur = samples.size / sr
    return AudioClip(path=path, sha256=hashlib.sha256(samples.tobytes()).hexdigest(), samples=samples,
                     sample_rate=sr, duration_s=dur, original_duration_s=dur, original_sample_rate=sr,
                     channels=1, truncated=False)


def write_wav(path: str | Path, samples: np.ndarray, sr: int = 22050) -> Path:
    """Write 16-bit PCM WAV (what a user's file would be)."""
    import soundfile as sf

    path = Path(path)
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype="PCM_16")
    return path
