"""`audio_features`: global tempo, dominant pitch, brightness and loudness of a clip (librosa).

All values are clip-level summaries (medians or one global estimate); nothing per section.
Cheap by design (median 0.65 s for a 30 s clip on a loaded 2-core machine, measured by
bench/bench_music_tools.py; the first call in a process adds librosa/numba loading):
- tempo: librosa's onset envelope + dynamic-programming beat tracker; the reported BPM is refined
  from the tracked beat times (mean inter-beat interval) because librosa's own tempo estimate is
  quantised to whole onset-envelope frames (~4 % steps at 150 BPM).
- pitch: pYIN at a coarse 0.5-semitone grid decides which frames are voiced (pYIN's cost grows
  with grid resolution: 0.1 semitone is ~20x slower); YIN, which is continuous, gives the f0
  value of those frames. Reported: the median f0 over voiced frames.
- loudness: RMS and peak in dBFS re a full-scale value of 1.0 (so a full-scale sine has
  RMS -3.01 dBFS); silence is floored at -120 dBFS so the JSON never holds -inf.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 22050          # Hz: librosa's native music rate; enough bandwidth for 2 kHz f0
HOP = 512                    # samples (23 ms at 22.05 kHz) for tempo and spectral frames
PITCH_HOP = 2048             # samples (93 ms) for pYIN/YIN frames: pitch is a global median here
PITCH_FRAME = 2048           # samples (93 ms): covers >= 2 periods of FMIN
PITCH_MAX_S = 60.0           # seconds analysed for pitch at most (pYIN dominates the cost)
PITCH_WINDOWS = 6            # evenly spaced windows making up PITCH_MAX_S on longer clips
FMIN_HZ = 50.0               # pitch search range (G1 .. B6): voice, bass and most melodic lines
FMAX_HZ = 2000.0
DB_FLOOR = -120.0            # dBFS floor for silence (JSON has no -inf)
SILENCE_DBFS = -70.0         # RMS below this counts as silence: no tempo or pitch reported
MIN_TEMPO_S = 5.0            # below this many seconds tempo is flagged unreliable
CLEAR_BEAT_STRENGTH = 0.5    # dB of mean onset flux at beats over the clip mean: below, unreliable
NO_BEAT_STRENGTH = 0.1       # below this there are no onsets at all: tempo_bpm is None

LIMITS = ("Global tempo and median pitch only; no per-section values, key or meter; tempo is "
          "unreliable below ~5 s or without clear beats and may be off by a factor of 2; pitch is "
          "the dominant monophonic f0 in 50-2000 Hz (polyphony gives one note or none); loudness "
          "is RMS dBFS, not perceptual LUFS.")


def _dbfs(x: float) -> float:
    """20*log10(x) re 1.0, floored at DB_FLOOR, rounded to 0.01 dB."""
    if not x > 0 or not math.isfinite(x):
        return DB_FLOOR
    return round(max(DB_FLOOR, 20.0 * math.log10(x)), 2)


def _finite(x: Any, ndigits: int = 2) -> float | None:
    """A JSON-safe rounded float, or None for NaN/inf."""
    x = float(x)
    return round(x, ndigits) if math.isfinite(x) else None


def _tempo(y: np.ndarray, sr: int) -> dict:
    import librosa

    duration = y.size / sr
    # Onset strength: positive log-mel power flux between frames, in dB.
    onset_env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr, hop_length=HOP)
    tempo = float(np.atleast_1d(tempo)[0])
    beat_times = librosa.frames_to_time(beats, sr=sr, hop_length=HOP)
    # Beat strength: how far the mean flux at the tracked beats rises above the clip's mean flux
    # (dB). Click tracks ~28, piano chords ~19, speech ~3, music with drums and noise ~0.8,
    # white noise ~0.3, birdsong ~0.5, steady tone ~0.03 (bench/bench_music_tools.py clips).
    strength = float(np.mean(onset_env[beats]) - np.mean(onset_env)) if beats.size else 0.0
    bpm = tempo if tempo > 0 else None
    if beat_times.size >= 4:
        ibi = np.diff(beat_times)  # seconds between consecutive beats
        med = float(np.median(ibi))
        steady = ibi[np.abs(ibi - med) <= 0.1 * med]  # drop skipped/doubled beats
        if steady.size >= 3:
            bpm = 60.0 / float(np.mean(steady))
    if strength < NO_BEAT_STRENGTH:
        bpm = None  # no onsets at all (a steady tone or drone): a tempo would be invented
    reliable = bool(bpm is not None and duration >= MIN_TEMPO_S and beat_times.size >= 4
                    and strength >= CLEAR_BEAT_STRENGTH)
    return {
        "tempo_bpm": _finite(bpm, 1) if bpm else None,
        "beat_count": int(beat_times.size) if bpm else 0,
        "beat_strength": _finite(max(0.0, strength), 2),
        "tempo_reliable": reliable,
    }


def _pitch(y: np.ndarray, sr: int) -> dict:
    import librosa

    if y.size < PITCH_FRAME:
        return {"pitch_hz": None, "pitch_note": None, "voiced_fraction": 0.0}
    kw = dict(fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sr, frame_length=PITCH_FRAME, hop_length=PITCH_HOP)
    parts = ([y] if y.size <= PITCH_MAX_S * sr else
             # long clip: PITCH_WINDOWS evenly spaced windows, PITCH_MAX_S seconds in all
             [y[int(a):int(a) + int(PITCH_MAX_S * sr / PITCH_WINDOWS)]
              for a in np.linspace(0, y.size - PITCH_MAX_S * sr / PITCH_WINDOWS, PITCH_WINDOWS)])
    coarse, voicing, fine = [], [], []
    for part in parts:
        # Coarse pYIN for the voicing decision only (0.5-semitone grid, 20 thresholds: ~20x cheaper).
        f0_c, v, _ = librosa.pyin(part, resolution=0.5, n_thresholds=20, **kw)
        f0_f = librosa.yin(part, **kw)  # continuous f0 per frame (parabolic interpolation)
        m = min(v.size, f0_f.size)
        coarse.append(f0_c[:m])
        voicing.append(v[:m])
        fine.append(f0_f[:m])
    f0_coarse, voiced, f0_fine = np.concatenate(coarse), np.concatenate(voicing), np.concatenate(fine)
    n = voiced.size
    # Keep YIN values that agree with pYIN within one semitone (guards against octave slips).
    agree = voiced & np.isfinite(f0_coarse) & (np.abs(12 * np.log2(f0_fine / np.where(
        np.isfinite(f0_coarse), f0_coarse, 1.0))) < 1.0)
    voiced_fraction = float(np.mean(voiced)) if n else 0.0
    if not np.any(voiced):
        return {"pitch_hz": None, "pitch_note": None, "voiced_fraction": 0.0}
    values = f0_fine[agree] if np.any(agree) else f0_coarse[voiced]
    f0 = float(np.median(values))
    return {
        "pitch_hz": _finite(f0, 1),
        "pitch_note": librosa.hz_to_note(f0),
        "voiced_fraction": round(voiced_fraction, 3),
    }


def _spectral(y: np.ndarray, sr: int) -> dict:
    import librosa

    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=HOP))  # magnitude, [freq, frames]
    energy = S.sum(axis=0)
    active = energy > 1e-6 * max(1e-12, float(energy.max()))  # ignore silent frames in medians
    if not np.any(active):
        return {"spectral_centroid_hz": None, "spectral_rolloff_hz": None, "spectral_flatness": None}
    S = S[:, active]
    centroid = librosa.feature.spectral_centroid(S=S, sr=sr)[0]
    rolloff = librosa.feature.spectral_rolloff(S=S, sr=sr, roll_percent=0.85)[0]
    flatness = librosa.feature.spectral_flatness(S=S)[0]  # 0 = tonal, 1 = white noise
    return {
        "spectral_centroid_hz": _finite(np.median(centroid), 1),
        "spectral_rolloff_hz": _finite(np.median(rolloff), 1),
        "spectral_flatness": _finite(np.median(flatness), 6),
    }


def compute(clip: AudioClip, **params) -> dict:
    """The `result` dict for one clip (mono float32 at SAMPLE_RATE)."""
    if params:
        raise ValueError(f"audio_features takes no parameters, got {sorted(params)}")
    y = np.asarray(clip.samples, dtype=np.float32)
    sr = int(clip.sample_rate)
    duration = round(y.size / sr, 3) if sr else 0.0
    y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if y.size else 0.0
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    result: dict[str, Any] = {
        "duration_s": duration,
        "loudness_dbfs": _dbfs(rms),
        "peak_dbfs": _dbfs(peak),
    }
    silent = result["loudness_dbfs"] < SILENCE_DBFS
    result["silent"] = bool(silent)
    if silent or y.size < PITCH_FRAME:  # nothing to analyse (or < 93 ms of audio)
        result.update({"tempo_bpm": None, "beat_count": 0, "beat_strength": 0.0, "tempo_reliable": False,
                       "pitch_hz": None, "pitch_note": None, "voiced_fraction": 0.0,
                       "spectral_centroid_hz": None, "spectral_rolloff_hz": None,
                       "spectral_flatness": None})
        return result
    try:
        result.update(_tempo(y, sr))
        result.update(_pitch(y, sr))
        result.update(_spectral(y, sr))
    except Exception as exc:  # librosa/numba failure: report, never cache a half result
        raise ToolFailed(f"audio_features failed on {clip.path}: {type(exc).__name__}: {exc}; "
                         "check that librosa is installed and the audio decodes") from exc
    return result


def backend(params: Mapping[str, Any]) -> str:
    from importlib.metadata import version

    return f"librosa {version('librosa')}"


SPECS = [
    ToolSpec(
        name="audio_features",
        description="Global tempo (BPM), median pitch (Hz), spectral centroid and loudness (dBFS) of the clip",
        version="1",
        limits=LIMITS,
        compute=compute,
        backend=backend,
        default_params={},
        sample_rate=SAMPLE_RATE,
    )
]
