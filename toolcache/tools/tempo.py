"""Tempo from an onset envelope: periodicity salience with a wide prior, candidates, refinement.

Used by `audio_features` (features.py). numpy only.

1. Onset envelope (audio_features v4: dsp.log_flux_envelope, the log-compressed linear-bin
   spectral flux; 512-sample hop = 23.2 ms at 22.05 kHz), minus its 1-s moving average (so slow
   loudness changes do not look periodic). The acf-heuristic weights below were set on the
   earlier mel dB flux (dsp.onset_envelope) and read drum loops worse on this one.
2. Salience of a tempo T (BPM), `SALIENCES` (default "acf-dft"):
   - "acf-dft": the envelope's autocorrelation at the beat period L = 60 fps / T frames times the
     magnitude of its Fourier transform at T / 60 Hz (Peeters 2007). A pulse at T makes the
     autocorrelation peak at T and at its slower levels T/2, T/3 (multiples of L), and the
     spectrum at T and its faster levels 2T, 3T (harmonics): only T has both, so the product
     settles the octave without hand-set weights (eighth-note hi-hats no longer halve the beat).
   - "acf-heuristic" (before audio_features v3, kept for comparison): the autocorrelation at L,
     minus a quarter of it at L/2, plus a quarter at 2L.
   Either is times a log-normal prior centred at PRIOR_BPM with PRIOR_OCTAVES = 1.5 octaves
   standard deviation: nearly flat over 50-200 BPM (0.80 at 55 and 220 BPM re 1.0 at 110) instead
   of the 1-octave prior at 120 BPM of librosa's beat tracker.
3. Candidates: local maxima of the salience on a 40-240 BPM grid (0.5 % steps), top CANDIDATES,
   salience normalised to the best = 1.0.
4. Refinement: the best candidate's period is re-estimated by a comb (beats every P frames at the
   best phase) searched over +-3 % in 0.05 % steps with linear interpolation of the envelope:
   the grid of step 2 is coarse (an integer-frame period at 150 BPM is a 6 % step) and the comb
   sums over every beat of the clip, so a steady pulse is located to ~0.1 %.
5. Sections: on clips >= 2 x SECTION_S, the salience of each SECTION_S window (hop SECTION_S / 2);
   a section tempo (folded by x2 / x0.5 to the global one) that differs from it by > 8 % is
   reported as a tempo change.
"""
from __future__ import annotations

import math

import numpy as np

MIN_BPM, MAX_BPM = 40.0, 240.0
GRID_STEP = 0.005            # relative BPM step of the candidate grid (0.5 %)
PRIOR_BPM = 110.0            # centre of the log-normal tempo prior
PRIOR_OCTAVES = 1.5          # its standard deviation in octaves (wide: nearly flat over 50-200 BPM)
CANDIDATES = 3               # tempo candidates reported
REFINE_SPAN = 0.03           # +-3 % searched by the comb refinement
REFINE_STEP = 0.0005         # 0.05 % steps
SECTION_S = 10.0             # seconds per section window
CHANGE_FRACTION = 0.08       # a section tempo this far (relative) from the global one is a change
HALF_PENALTY = 0.25          # acf-heuristic: weight of the autocorrelation at half the period (subtracted)
DOUBLE_BONUS = 0.25          # acf-heuristic: weight of the autocorrelation at twice the period (added)
DFT_CHUNK = 64               # acf-dft: grid tempos per matrix product (memory: 64 x frames complex)
AMBIGUOUS_RATIO = 0.6        # a x2 / x0.5 candidate with salience >= this re the best: octave-ambiguous


def _detrend(env: np.ndarray, fps: float) -> np.ndarray:
    k = max(1, int(round(fps)))                         # 1-s moving average
    kernel = np.ones(k) / k
    local = np.convolve(env, kernel, mode="same")
    return np.maximum(0.0, env - local)


def _autocorr(x: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation (each lag divided by its overlap count), normalised to ac[0] = 1."""
    n = x.size
    x = x - x.mean()
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    ac = np.fft.irfft(spec * np.conj(spec), size)[:n]
    ac = ac / np.arange(n, 0, -1)
    return ac / ac[0] if ac[0] > 0 else np.zeros(n)


def _interp(ac: np.ndarray, lag: np.ndarray) -> np.ndarray:
    return np.interp(lag, np.arange(ac.size), ac, right=0.0)


def bpm_grid() -> np.ndarray:
    n = int(math.log(MAX_BPM / MIN_BPM) / math.log1p(GRID_STEP)) + 1
    return MIN_BPM * (1.0 + GRID_STEP) ** np.arange(n)


def _prior(grid: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (np.log2(grid / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def _spectrum(env: np.ndarray, fps: float, grid: np.ndarray) -> np.ndarray:
    """|Fourier transform| of the (Hann-windowed, mean-removed) envelope at each grid tempo's
    frequency T / 60 Hz, normalised to its maximum (a direct transform: the grid is log-spaced)."""
    x = (env - env.mean()) * np.hanning(env.size)
    t = np.arange(env.size) / fps                       # s
    out = np.empty(grid.size)
    for i in range(0, grid.size, DFT_CHUNK):
        hz = grid[i:i + DFT_CHUNK] / 60.0
        out[i:i + DFT_CHUNK] = np.abs(np.exp(-2j * np.pi * np.outer(hz, t)) @ x)
    top = out.max()
    return out / top if top > 0 else out


def _salience_acf_dft(env: np.ndarray, fps: float, grid: np.ndarray) -> np.ndarray:
    acf = np.maximum(0.0, _interp(_autocorr(env), 60.0 * fps / grid))
    return acf * _spectrum(env, fps, grid) * _prior(grid)


def _salience_acf_heuristic(env: np.ndarray, fps: float, grid: np.ndarray) -> np.ndarray:
    ac = _autocorr(env)
    lag = 60.0 * fps / grid
    # A level whose half-period also pulses strongly may be a slower grouping of the faster pulse:
    # subtract a quarter of that (a 200 BPM click track otherwise reads 100, 66.7 or 50 as well);
    # a level whose double period also pulses is grouped in twos (bars): add a quarter.
    s = _interp(ac, lag) - HALF_PENALTY * np.maximum(0.0, _interp(ac, lag / 2)) + \
        DOUBLE_BONUS * np.maximum(0.0, _interp(ac, 2 * lag))
    return np.maximum(0.0, s) * _prior(grid)


# name -> salience(env, fps, grid) -> [grid] >= 0 (see the module docstring, step 2)
SALIENCES = {"acf-dft": _salience_acf_dft, "acf-heuristic": _salience_acf_heuristic}
DEFAULT_SALIENCE = "acf-dft"


def available_saliences() -> list[str]:
    return list(SALIENCES)


def check_salience(name: str) -> str:
    if name not in SALIENCES:
        raise ValueError(f"tempo salience {name!r} unknown; valid: {', '.join(SALIENCES)}")
    return name


def salience(env: np.ndarray, fps: float, grid: np.ndarray, method: str = DEFAULT_SALIENCE) -> np.ndarray:
    """Prior-weighted periodicity salience (>= 0) of each BPM in `grid` for one envelope."""
    return SALIENCES[check_salience(method)](env, fps, grid)


def _peaks(sal: np.ndarray, grid: np.ndarray, k: int) -> list[tuple[float, float]]:
    i = np.arange(1, sal.size - 1)
    idx = i[(sal[i] > sal[i - 1]) & (sal[i] >= sal[i + 1]) & (sal[i] > 0)]
    idx = idx[np.argsort(-sal[idx], kind="stable")]
    out: list[tuple[float, float]] = []
    for j in idx:
        if all(abs(math.log(grid[j] / b)) > 0.12 for b, _ in out):   # distinct levels: 13 % apart at least
            out.append((float(grid[j]), float(sal[j])))
        if len(out) == k:
            break
    return out


def refine(env: np.ndarray, fps: float, bpm: float) -> tuple[float, np.ndarray]:
    """(refined BPM, beat frame positions) from a comb over +-REFINE_SPAN of `bpm`."""
    period0 = 60.0 * fps / bpm
    best = (-1.0, period0, 0.0)
    t = np.arange(env.size)
    for period in period0 * (1.0 + np.arange(-REFINE_SPAN, REFINE_SPAN + 1e-12, REFINE_STEP)):
        n_beats = int((env.size - 1) // period)
        if n_beats < 2:
            continue
        phases = np.arange(0.0, period, 0.5)
        pos = phases[:, None] + period * np.arange(n_beats)[None, :]      # [phases, beats] frames
        vals = np.interp(pos, t, env, right=0.0).mean(axis=1)
        j = int(np.argmax(vals))
        if vals[j] > best[0]:
            best = (float(vals[j]), float(period), float(phases[j]))
    _, period, phase = best
    beats = phase + period * np.arange(int((env.size - 1 - phase) // period) + 1)
    return 60.0 * fps / period, beats


def estimate(env: np.ndarray, fps: float, method: str = DEFAULT_SALIENCE) -> dict:
    """Tempo estimate of one onset envelope: {bpm, candidates, beats (frames), ambiguous, sections}.
    `method`: the salience (SALIENCES)."""
    x = _detrend(np.asarray(env, dtype=np.float64), fps)
    grid = bpm_grid()
    sal = salience(x, fps, grid, method)
    cands = _peaks(sal, grid, CANDIDATES)
    if not cands:
        return {"bpm": None, "candidates": [], "beats": np.zeros(0), "ambiguous": True, "sections": []}
    top = cands[0][1]
    bpm, beats = refine(x, fps, cands[0][0])
    # the salience of the octave neighbours (x2, x0.5) relative to the best
    # the best salience within 8 % of x2 / x0.5 of the best tempo, relative to the best
    near_octave = np.zeros(grid.size, dtype=bool)
    for f in (2.0, 0.5):
        near_octave |= np.abs(np.log(grid / (f * cands[0][0]))) <= 0.08
    octave = float(sal[near_octave].max()) / top if near_octave.any() else 0.0
    related = (1 / 3, 0.5, 2 / 3, 1.0, 1.5, 2.0, 3.0)   # other metrical levels of the same pulse
    rival = max([s for b, s in cands[1:] if min(abs(math.log(b / cands[0][0] / f)) for f in related) > 0.04]
                or [0.0]) / top
    candidates = [{"bpm": round(bpm, 1), "salience": 1.0}] + [
        {"bpm": round(b, 1), "salience": round(s / top, 3)} for b, s in cands[1:]]
    return {"bpm": bpm, "candidates": candidates, "beats": beats,
            "ambiguous": bool(octave >= AMBIGUOUS_RATIO), "octave_salience": round(octave, 3),
            "rival_salience": round(rival, 3), "sections": sections(x, fps, bpm, grid, method)}


def sections(x: np.ndarray, fps: float, bpm: float, grid: np.ndarray, method: str = DEFAULT_SALIENCE) -> list[dict]:
    """[{start, end, bpm}] (seconds) of SECTION_S windows whose tempo differs from `bpm` by more
    than CHANGE_FRACTION after octave folding, merged with neighbours of similar tempo; [] if none."""
    win, hop = int(SECTION_S * fps), int(SECTION_S * fps / 2)
    if x.size < 2 * win:
        return []
    local = []
    for a in range(0, x.size - win + 1, hop):
        c = _peaks(salience(x[a:a + win], fps, grid, method), grid, 1)
        if not c:
            continue
        b = c[0][0]
        for f in (0.5, 2.0):                          # the same tempo at another metrical level
            if abs(b * f / bpm - 1.0) <= CHANGE_FRACTION:
                b = b * f
        local.append((a / fps, (a + win) / fps, b))
    if not any(abs(b / bpm - 1.0) > CHANGE_FRACTION for _, _, b in local):
        return []
    merged: list[list[float]] = []
    for s, e, b in local:
        if merged and abs(b / merged[-1][2] - 1.0) <= CHANGE_FRACTION:
            merged[-1][1] = e
            merged[-1][2] = (merged[-1][2] + b) / 2.0
        else:
            if merged:                                                # windows overlap by half:
                s = merged[-1][1] = (s + merged[-1][1]) / 2.0         # the boundary is mid-overlap
            merged.append([s, e, b])
    return [{"start": round(s, 2), "end": round(e, 2), "bpm": round(b, 1)} for s, e, b in merged] if len(merged) > 1 else []
