"""numpy/scipy signal front-ends shared by the music tools (no librosa, hence no numba JIT).

Why: librosa's beat, pitch, onset and spectral-feature modules are numba-jitted; in a fresh venv
their first call compiles for ~100 s on 2 cores with no message. Everything here is plain
numpy/scipy (vectorised), so a first call costs the same as any other.

All functions take 1-D float mono `y` at `sr` Hz. Frames are centred (the signal is reflect-padded
by n_fft // 2), so frame t is centred at t * hop / sr seconds.
"""
from __future__ import annotations

import math

import numpy as np


def frame_times(n_frames: int, sr: int, hop: int) -> np.ndarray:
    """Centre time (s) of each centred frame."""
    return np.arange(n_frames) * hop / float(sr)


def stft_mag(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with a periodic Hann window, centred frames: [1 + n_fft // 2, frames] float32."""
    y = np.asarray(y, dtype=np.float32)
    pad = n_fft // 2
    if y.size < pad + 1:
        y = np.pad(y, (0, pad + 1 - y.size))
    yp = np.pad(y, pad, mode="reflect")
    n_frames = 1 + (yp.size - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(
        yp, shape=(n_frames, n_fft), strides=(yp.strides[0] * hop, yp.strides[0]), writeable=False)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    out = np.empty((1 + n_fft // 2, n_frames), dtype=np.float32)
    step = max(1, int(2 ** 22 // n_fft))          # frames per FFT block: bounds peak memory (~32 MB)
    for a in range(0, n_frames, step):
        out[:, a:a + step] = np.abs(np.fft.rfft(frames[a:a + step] * window, axis=1)).T
    return out


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] triangular filters on the HTK mel scale, each normalised to unit area
    (so a band's value is a mean of power, independent of its width)."""
    fmax = sr / 2.0 if fmax is None else fmax
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.arange(1 + n_fft // 2) * sr / n_fft
    lower = (freqs[None, :] - edges[:-2, None]) / np.maximum(1e-9, edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None, :]) / np.maximum(1e-9, edges[2:] - edges[1:-1])[:, None]
    fb = np.maximum(0.0, np.minimum(lower, upper))
    return (fb / np.maximum(fb.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


def onset_envelope(y: np.ndarray, sr: int, hop: int = 512, n_fft: int = 2048, n_mels: int = 64,
                   top_db: float = 50.0, S: np.ndarray | None = None) -> np.ndarray:
    """Onset strength per frame: mean over mel bands of the positive change in log power (dB),
    dB floored `top_db` below the clip's peak band level (50 dB: lower, the sidelobe leakage of a
    steady tone flickers by ~1 dB from frame to frame and reads as onsets).
    `S`: the clip's stft_mag(y, n_fft, hop) when the caller already has it (not recomputed)."""
    S = (stft_mag(y, n_fft, hop) if S is None else S) ** 2
    M = mel_filterbank(sr, n_fft, n_mels, fmin=30.0, fmax=min(8000.0, sr / 2.0)) @ S
    db = 10.0 * np.log10(np.maximum(M, 1e-10))
    db = np.maximum(db, db.max() - top_db)
    flux = np.maximum(0.0, np.diff(db, axis=1)).mean(axis=0)
    return np.concatenate([[0.0], flux]).astype(np.float64)


def log_flux_envelope(S: np.ndarray, gamma: float = 1000.0) -> np.ndarray:
    """Log-compressed spectral flux per frame from a magnitude STFT `S` [bins, frames]: the mean over
    linear-frequency bins of the positive frame-to-frame change of log(1 + gamma |X| / max |X|)
    (natural-log units; Klapuri 1999, Mueller 2015 sec. 6.1). Used for tempo (tempo.py) where
    onset_envelope's mel dB flux is dominated by the bass: linear bins give the highs, where
    drums' transients are, their bandwidth's share (half the bins lie above sr / 4), and the
    compression (a soft floor ~20 log10(gamma) = 60 dB below the clip's loudest bin) lets quiet
    hi-hats and snares count beside the kick. Frame 0 is 0 (no previous frame)."""
    n = S.shape[1]
    top = float(S.max()) if S.size else 0.0
    out = np.zeros(n)
    if n < 2 or top <= 0.0:
        return out
    step = 4096                                   # frames per block (bounds memory on long clips)
    for a in range(1, n, step):                   # block a..b needs frame a - 1 as its reference
        L = np.log1p(np.float32(gamma / top) * S[:, a - 1:a + step].astype(np.float32))
        out[a:a + step] = np.maximum(0.0, np.diff(L, axis=1)).mean(axis=0, dtype=np.float64)
    return out


def hpss_masks(S: np.ndarray, time_width: int = 9, freq_width: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Soft (Wiener, power 2) harmonic and percussive masks of a magnitude spectrogram by median
    filtering along time (harmonic: steady partials) and along frequency (percussive: broadband)."""
    from scipy.ndimage import median_filter

    H = median_filter(S, size=(1, time_width), mode="reflect")
    P = median_filter(S, size=(freq_width, 1), mode="reflect")
    h2, p2 = H.astype(np.float64) ** 2, P.astype(np.float64) ** 2
    total = np.maximum(h2 + p2, 1e-20)
    return (h2 / total).astype(np.float32), (p2 / total).astype(np.float32)


def estimate_tuning(S: np.ndarray, sr: int, n_fft: int) -> float:
    """Tuning offset in fractions of a semitone (-0.5..0.5) re A440, from spectral peaks 80-2000 Hz:
    the magnitude-weighted circular mean of each peak's deviation from the equal-tempered grid
    (peak frequency refined by parabolic interpolation of log magnitude)."""
    mag = S.mean(axis=1).astype(np.float64)
    freqs = np.arange(mag.size) * sr / n_fft
    k = np.arange(1, mag.size - 1)
    peaks = k[(mag[k] > mag[k - 1]) & (mag[k] >= mag[k + 1]) & (freqs[k] >= 80) & (freqs[k] <= 2000)]
    if peaks.size == 0:
        return 0.0
    peaks = peaks[mag[peaks] >= 0.1 * mag[peaks].max()]
    a, b, c = (np.log(np.maximum(mag[peaks + d], 1e-20)) for d in (-1, 0, 1))
    shift = 0.5 * (a - c) / np.where(np.abs(a - 2 * b + c) > 1e-12, a - 2 * b + c, 1e-12)
    f = (peaks + np.clip(shift, -0.5, 0.5)) * sr / n_fft
    dev = 12.0 * np.log2(f / 440.0)
    phase = np.angle(np.sum(mag[peaks] * np.exp(2j * np.pi * dev)))
    return float(phase / (2 * np.pi))


def chroma_from_spectrum(S: np.ndarray, sr: int, n_fft: int, tuning: float = 0.0,
                         midi_lo: float = 36.0, midi_hi: float = 96.0) -> np.ndarray:
    """[12, frames] chroma (C first): each STFT bin between MIDI midi_lo and midi_hi adds its
    magnitude to its pitch class with a triangular weight over +-1 semitone of the nearest note
    (after the tuning offset), so partials a little off the grid still count."""
    freqs = np.arange(S.shape[0]) * sr / n_fft
    with np.errstate(divide="ignore"):
        midi = 69.0 + 12.0 * np.log2(np.where(freqs > 0, freqs, 1.0) / 440.0) - tuning
    keep = (freqs > 0) & (midi >= midi_lo - 0.5) & (midi <= midi_hi + 0.5)
    idx = np.nonzero(keep)[0]
    note = np.round(midi[idx])
    w = np.clip(1.0 - np.abs(midi[idx] - note), 0.0, 1.0)
    W = np.zeros((12, S.shape[0]), dtype=np.float32)
    np.add.at(W, (note.astype(int) % 12, idx), w)
    return W @ S


def yin_cmnd(frames: np.ndarray, max_lag: int) -> np.ndarray:
    """YIN cumulative-mean-normalised difference d'(tau) per frame: [frames, max_lag + 1]
    (d'(0) = 1). The difference function comes from FFT autocorrelation (no loops over lags)."""
    n = frames.shape[1]
    w = n - max_lag                               # integration window (samples)
    size = 1 << int(math.ceil(math.log2(n + w)))
    spec_x = np.fft.rfft(frames, size, axis=1)
    spec_y = np.fft.rfft(frames[:, :w][:, ::-1], size, axis=1)
    cross = np.fft.irfft(spec_x * spec_y, size, axis=1)[:, w - 1:w + max_lag]   # sum x[j] x[j+tau], j<w
    sq = np.cumsum(np.concatenate([np.zeros((frames.shape[0], 1)), frames.astype(np.float64) ** 2], axis=1), axis=1)
    energy0 = sq[:, w][:, None]                               # sum_{j<w} x[j]^2
    energy_tau = sq[:, w:w + max_lag + 1] - sq[:, :max_lag + 1]  # sum_{j<w} x[j+tau]^2
    diff = np.maximum(0.0, energy0 + energy_tau - 2.0 * cross)
    taus = np.arange(1, max_lag + 1)
    cum = np.cumsum(diff[:, 1:], axis=1)
    out = np.ones_like(diff)
    out[:, 1:] = diff[:, 1:] * taus / np.maximum(cum, 1e-20)
    return out
