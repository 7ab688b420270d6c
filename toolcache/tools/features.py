"""`audio_features`: global tempo (with candidates and sections), dominant pitch, brightness and loudness.

numpy/scipy only (toolcache/tools/dsp.py, tempo.py): no librosa, so no numba JIT and no silent
one-time compile on the first call in a fresh venv (librosa's beat/pitch/spectral modules spent
~112 s compiling there). Median cost: see bench/bench_music_tools.py.
- tempo (tempo.py): log-compressed spectral flux (dsp.log_flux_envelope) -> periodicity salience
  with a wide log-normal prior (1.5 octaves around 110 BPM) -> top candidates with salience
  ("68 or 136") -> comb refinement of the best (+-3 % in 0.05 % steps); per-section tempo when
  it changes (10-s windows). Beat strength is measured on the mel dB flux (dsp.onset_envelope).
  `tempo_reliable` needs >= 5 s, clear beats, no rival non-octave periodicity and one tempo.
- pitch: YIN (cumulative-mean-normalised difference, threshold 0.15) on 93 ms frames; the coarse
  integer lag is refined by parabolic interpolation (an integer lag is off by up to half a sample,
  1.6 % at 700 Hz). Reported: the median f0 over voiced frames.
- loudness: RMS and peak in dBFS re a full-scale value of 1.0 (so a full-scale sine has
  RMS -3.01 dBFS); silence is floored at -120 dBFS so the JSON never holds -inf.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 22050          # Hz: enough bandwidth for 2 kHz f0 and 8 kHz onset bands
HOP = 512                    # samples (23 ms at 22.05 kHz) for tempo and spectral frames
N_FFT = 2048                 # samples (93 ms) per STFT frame for tempo and spectral features
PITCH_HOP = 2048             # samples (93 ms) between YIN frames: pitch is a global median here
PITCH_FRAME = 2048           # samples (93 ms): covers >= 2 periods of FMIN
PITCH_MAX_S = 60.0           # seconds analysed for pitch at most (bounds the cost)
PITCH_WINDOWS = 6            # evenly spaced windows making up PITCH_MAX_S on longer clips
FMIN_HZ = 50.0               # pitch search range (G1 .. B6): voice, bass and most melodic lines
FMAX_HZ = 2000.0
DB_FLOOR = -120.0            # dBFS floor for silence (JSON has no -inf)
SILENCE_DBFS = -70.0         # RMS below this counts as silence: no tempo or pitch reported
MIN_TEMPO_S = 5.0            # below this many seconds tempo is flagged unreliable
CLEAR_BEAT_STRENGTH = 0.5    # dB of mean onset flux at beats over the clip mean: below, unreliable
NO_BEAT_STRENGTH = 0.1       # below this there are no onsets at all: tempo_bpm is None
RIVAL_SALIENCE = 0.9         # a non-octave candidate this salient (re the best) makes tempo unreliable
YIN_THRESHOLD = 0.15         # YIN d' dip below this = periodic (voiced) frame
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

LIMITS = ("Tempo: best candidate plus up to 2 others with salience; the metrical level (x2, x0.5) is "
          "often ambiguous (check tempo_candidates and tempo_octave_ambiguous: on 3 real MMAU BPM "
          "questions 2 read within 8 %, 2 octave-tolerant; on synthetic drum loops at 50-200 BPM 13 of "
          "36 read within 8 %, 21 an octave off (x2 or x0.5), so weigh the other candidates); "
          "unreliable below ~5 s or without clear beats; per-section tempo only "
          "when it changes by > 8 % over 10-s windows; no meter or key (key: see the chords tool); "
          "pitch is the dominant monophonic f0 in 50-2000 Hz (polyphony gives one note or none); "
          "loudness is RMS dBFS, not perceptual LUFS.")


def _dbfs(x: float) -> float:
    """20*log10(x) re 1.0, floored at DB_FLOOR, rounded to 0.01 dB."""
    if not x > 0 or not math.isfinite(x):
        return DB_FLOOR
    return round(max(DB_FLOOR, 20.0 * math.log10(x)), 2)


def _finite(x: Any, ndigits: int = 2) -> float | None:
    """A JSON-safe rounded float, or None for NaN/inf."""
    x = float(x)
    return round(x, ndigits) if math.isfinite(x) else None


def _tempo(y: np.ndarray, sr: int, salience: str | None = None, S: np.ndarray | None = None) -> dict:
    """The tempo fields of the result; `salience`: tempo.SALIENCES name (None: the default);
    `S`: dsp.stft_mag(y, N_FFT, HOP) when the caller has it."""
    from toolcache.tools import dsp, tempo as tempo_mod

    duration = y.size / sr
    fps = sr / HOP                                    # onset-envelope frames per second (43.07)
    S = dsp.stft_mag(y, N_FFT, HOP) if S is None else S
    onset_env = dsp.onset_envelope(y, sr, hop=HOP, n_fft=N_FFT, S=S)   # mean positive log-mel flux, dB per frame
    # The periodicity is read from the log-compressed linear-bin flux (dsp.log_flux_envelope): the
    # mel dB flux is dominated by bass and kick, so on drum loops it locks onto the kick/snare
    # pattern's slower pulse (bench/bench_tempo_patterns.py: hiphop 0/12 -> 7/12 within 8 %, all
    # loops 6/36 -> 13/36, click tracks 12/12 unchanged). The beat strength
    # below stays on the dB flux, where its thresholds were measured (and a steady tone's sidelobe
    # flicker, which the soft 60-dB floor of the log flux lets through, stays below them).
    est = tempo_mod.estimate(dsp.log_flux_envelope(S), fps, salience or tempo_mod.DEFAULT_SALIENCE)
    bpm = est["bpm"]
    beat_frames = np.round(est["beats"]).astype(int)
    beat_frames = beat_frames[(beat_frames >= 0) & (beat_frames < onset_env.size)]
    # Beat strength: how far the flux at the comb's beats (max over +-1 frame) rises above the
    # clip's mean flux (dB). Click tracks ~20, music with drums ~1-3, speech ~1, white noise ~0.2,
    # steady tone ~0 (synthetic clips of tests/test_tool_features.py).
    if beat_frames.size:
        near = np.maximum.reduce([onset_env[np.clip(beat_frames + d, 0, onset_env.size - 1)] for d in (-1, 0, 1)])
        strength = float(np.mean(near) - np.mean(onset_env))
    else:
        strength = 0.0
    if strength < NO_BEAT_STRENGTH or bpm is None:
        # no onsets at all (a steady tone or drone): a tempo would be invented
        return {"tempo_bpm": None, "beat_count": 0, "beat_strength": _finite(max(0.0, strength), 2),
                "tempo_reliable": False, "tempo_candidates": [], "tempo_octave_ambiguous": True,
                "tempo_sections": []}
    # Reliable: long enough, clear beats, no rival periodicity that is not an octave of the best,
    # and one tempo throughout.
    reliable = bool(duration >= MIN_TEMPO_S and beat_frames.size >= 4 and strength >= CLEAR_BEAT_STRENGTH
                    and est["rival_salience"] < RIVAL_SALIENCE and not est["sections"])
    return {
        "tempo_bpm": _finite(bpm, 1),
        "beat_count": int(beat_frames.size),
        "beat_strength": _finite(max(0.0, strength), 2),
        "tempo_reliable": reliable,
        # other metrical levels a listener may tap ("68 or 136"): salience re the best = 1.0
        "tempo_candidates": est["candidates"],
        "tempo_octave_ambiguous": bool(est["ambiguous"]),
        "tempo_sections": est["sections"],   # [] when the tempo does not change
    }


def hz_to_note(f: float) -> str:
    """Nearest equal-tempered note name re A4 = 440 Hz, e.g. 'A4', 'C#3'."""
    m = int(round(69 + 12 * math.log2(f / 440.0)))
    return f"{PITCH_CLASSES[m % 12]}{m // 12 - 1}"


def _pitch(y: np.ndarray, sr: int) -> dict:
    from toolcache.tools import dsp

    none = {"pitch_hz": None, "pitch_note": None, "voiced_fraction": 0.0}
    if y.size < PITCH_FRAME:
        return none
    parts = ([y] if y.size <= PITCH_MAX_S * sr else
             # long clip: PITCH_WINDOWS evenly spaced windows, PITCH_MAX_S seconds in all
             [y[int(a):int(a) + int(PITCH_MAX_S * sr / PITCH_WINDOWS)]
              for a in np.linspace(0, y.size - PITCH_MAX_S * sr / PITCH_WINDOWS, PITCH_WINDOWS)])
    max_lag = int(math.ceil(sr / FMIN_HZ))           # 441 samples at 22.05 kHz
    min_lag = int(math.floor(sr / FMAX_HZ))          # 11 samples
    lags, voiced_all = [], []
    for part in parts:
        n = 1 + (part.size - PITCH_FRAME) // PITCH_HOP
        if n < 1:
            continue
        frames = np.lib.stride_tricks.sliding_window_view(part.astype(np.float64), PITCH_FRAME)[::PITCH_HOP][:n]
        rms_db = 10 * np.log10(np.maximum(np.mean(frames ** 2, axis=1), 1e-20))
        d = dsp.yin_cmnd(frames, max_lag)             # [frames, max_lag + 1]
        # Coarse stage: the first integer lag whose d' dips below YIN_THRESHOLD, at its local minimum.
        below = d[:, min_lag:] < YIN_THRESHOLD
        has = below.any(axis=1) & (rms_db > SILENCE_DBFS)
        first = min_lag + np.argmax(below, axis=1)
        tau = first.copy()
        for _ in range(max_lag):                      # walk down to the bottom of the dip (vectorised)
            step = (tau + 1 <= max_lag) & (d[np.arange(n), np.minimum(tau + 1, max_lag)] < d[np.arange(n), tau])
            if not step.any():
                break
            tau = tau + step
        # Fine stage: parabolic interpolation of d' around the integer minimum (sub-sample lag);
        # an integer lag alone is off by up to half a sample (1.6 % at 700 Hz).
        lag = tau.astype(np.float64)
        inner = (tau > 1) & (tau < max_lag)
        i = np.arange(n)[inner]
        a, b, c = d[i, tau[inner] - 1], d[i, tau[inner]], d[i, tau[inner] + 1]
        den = a - 2 * b + c
        lag[inner] = tau[inner] + np.where(np.abs(den) > 1e-12, 0.5 * (a - c) / np.where(np.abs(den) > 1e-12, den, 1), 0.0)
        lags.append(lag)
        voiced_all.append(has)
    if not lags:
        return none
    lag, voiced = np.concatenate(lags), np.concatenate(voiced_all)
    if not np.any(voiced):
        return none
    f0 = float(np.median(sr / lag[voiced]))
    return {
        "pitch_hz": _finite(f0, 1),
        "pitch_note": hz_to_note(f0),
        "voiced_fraction": round(float(np.mean(voiced)), 3),
    }


def _spectral(y: np.ndarray, sr: int, S: np.ndarray | None = None) -> dict:
    """`S`: dsp.stft_mag(y, N_FFT, HOP) when the caller has it."""
    from toolcache.tools import dsp

    S = (dsp.stft_mag(y, N_FFT, HOP) if S is None else S).astype(np.float64)   # magnitude, [freq, frames]
    energy = S.sum(axis=0)
    active = energy > 1e-6 * max(1e-12, float(energy.max()))  # ignore silent frames in medians
    if not np.any(active):
        return {"spectral_centroid_hz": None, "spectral_rolloff_hz": None, "spectral_flatness": None}
    S = S[:, active]
    freqs = np.arange(S.shape[0]) * sr / float(N_FFT)
    total = np.maximum(S.sum(axis=0), 1e-12)
    centroid = freqs @ S / total
    cum = np.cumsum(S, axis=0)
    rolloff = freqs[np.argmax(cum >= 0.85 * total[None, :], axis=0)]    # 85 % of the magnitude below
    power = np.maximum(S ** 2, 1e-10)
    flatness = np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)  # 0 = tonal, 1 = white noise
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
        from toolcache.tools import dsp

        S = dsp.stft_mag(y, N_FFT, HOP)               # one STFT for tempo and spectral features
        result.update(_tempo(y, sr, S=S))
        result.update(_pitch(y, sr))
        result.update(_spectral(y, sr, S=S))
    except Exception as exc:  # a numpy/scipy failure: report, never cache a half result
        raise ToolFailed(f"audio_features failed on {clip.path}: {type(exc).__name__}: {exc}; "
                         "check that numpy/scipy are installed and the audio decodes") from exc
    return result


def backend(params: Mapping[str, Any]) -> str:
    from importlib.metadata import version

    return f"numpy-dsp (numpy {version('numpy')}, scipy {version('scipy')})"


SPECS = [
    ToolSpec(
        name="audio_features",
        description="Tempo (BPM) with candidates and per-section changes, median pitch (Hz), spectral centroid, loudness (dBFS)",
        version="4",  # 4: tempo from the log-compressed linear-bin flux; 3: tempo salience acf-dft
                      # (octave choice); 2: numpy DSP instead of librosa
        limits=LIMITS,
        compute=compute,
        backend=backend,
        default_params={},
        sample_rate=SAMPLE_RATE,
    )
]
