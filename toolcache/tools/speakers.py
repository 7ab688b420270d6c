"""Who speaks when (`speakers`): Silero VAD speech regions, an estimated speaker count and turns.

Speech regions: the Silero VAD v6 ONNX model (MIT, (c) Silero Team), loaded with onnxruntime
directly. The file is the copy faster-whisper (a core dependency) ships as
faster_whisper/assets/silero_vad_v6.onnx. The `silero-vad` wheel carries the same family of
models but requires torch (Requires-Dist: torch>=1.12), which the core install must not pull, so
it is not used. The model reads 512-sample (32 ms at 16 kHz) chunks with 64 samples of left
context and returns a speech probability per chunk; regions are hysteresis runs (on >= 0.5,
off < 0.35) of at least 0.25 s, gaps under 0.3 s bridged.

Speakers: no speaker-embedding network ships offline in a wheel we can depend on, so voices are
told apart by MFCC statistics (mean and standard deviation of 19 cepstra, c0 dropped, over
1.5 s windows every 0.75 s of speech; cepstral mean/variance normalised over the clip),
standardised per statistic, clustered agglomeratively (average linkage, cosine distance, stop at
`distance` = 1.1: on the two-speaker example the last merge is at 1.24 and the one before at
1.02; with 2 clusters 71 % of its windows get the right speaker against its .rttm). A cluster with
less than `min_speaker_s` seconds of speech is merged into its nearest. Turns are runs of
windows with the same cluster after a 3-window majority filter.

Honest limits (also in the spec): reliable for 1-3 clearly different voices (e.g. male/female)
in clean speech; similar voices merge, one voice in very different conditions (shouting,
phone/room) can split; overlapping speech is given to one speaker; turns shorter than ~1.5 s
are missed.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 16000
CHUNK = 512                       # samples per VAD step (32 ms)
CONTEXT = 64                      # samples of left context the v6 model expects
VAD_ON, VAD_OFF = 0.5, 0.35       # hysteresis thresholds on the speech probability
MIN_SPEECH_S, MIN_GAP_S = 0.25, 0.3
EMB_WIN_S, EMB_HOP_S = 1.5, 0.75  # seconds per embedding window / between windows
N_CEPS = 20                       # cepstra computed (c0, the loudness, is dropped)

_LOCK = threading.Lock()
_SESSION: dict[str, Any] = {}
DEFAULTS = {"distance": 1.1, "min_speaker_s": 2.0, "max_speakers": 6}


def vad_model_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ToolFailed("the Silero VAD model is missing: package faster-whisper is not installed; pip install faster-whisper")
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise ToolFailed(f"{path} is missing (faster-whisper ships it); reinstall: pip install --force-reinstall --no-deps faster-whisper")
    return path


def _vad_session():
    with _LOCK:
        if "vad" not in _SESSION:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1           # a 1.2 MB model: one thread, no spinning on shared CPUs
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.log_severity_level = 4
            try:
                _SESSION["vad"] = ort.InferenceSession(str(vad_model_path()), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
            except ToolFailed:
                raise
            except Exception as exc:
                raise ToolFailed(f"cannot load the Silero VAD ONNX: {type(exc).__name__}: {exc}; "
                                 f"reinstall: pip install --force-reinstall --no-deps faster-whisper") from exc
        return _SESSION["vad"]


def speech_probs(samples: np.ndarray) -> np.ndarray:
    """Speech probability per 32 ms chunk (Silero VAD v6, stateful over the whole clip)."""
    y = np.asarray(samples, dtype=np.float32)
    pad = (-y.size) % CHUNK
    y = np.pad(y, (0, pad))
    chunks = y.reshape(-1, CHUNK)
    ctx = np.zeros((chunks.shape[0], CONTEXT), dtype=np.float32)
    ctx[1:] = chunks[:-1, -CONTEXT:]                 # each chunk sees the previous chunk's tail
    batch = np.concatenate([ctx, chunks], axis=1)
    sess = _vad_session()
    h = np.zeros((1, 1, 128), dtype=np.float32)
    c = np.zeros((1, 1, 128), dtype=np.float32)
    out = []
    for a in range(0, batch.shape[0], 4096):        # the LSTM state carries across blocks
        p, h, c = sess.run(None, {"input": batch[a:a + 4096], "h": h, "c": c})
        out.append(np.asarray(p).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def speech_regions(probs: np.ndarray, duration_s: float) -> list[tuple[float, float]]:
    """(start, end) seconds of speech from per-chunk probabilities (hysteresis, min length, gap bridging)."""
    step = CHUNK / SAMPLE_RATE
    regions: list[list[float]] = []
    on = False
    for k, p in enumerate(probs):
        if not on and p >= VAD_ON:
            on, start = True, k * step
        elif on and p < VAD_OFF:
            on = False
            regions.append([start, k * step])
    if on:
        regions.append([start, len(probs) * step])
    merged: list[list[float]] = []
    for r in regions:
        if merged and r[0] - merged[-1][1] < MIN_GAP_S:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    return [(round(a, 2), round(min(b, duration_s), 2)) for a, b in merged if b - a >= MIN_SPEECH_S]


def mfcc(samples: np.ndarray) -> np.ndarray:
    """[frames, N_CEPS] MFCC (10 ms hop) from the YAMNet log-mel front-end (64 bands 125-7500 Hz)."""
    from scipy.fft import dct

    from toolcache.tools import sound

    return dct(sound.log_mel(samples), type=2, norm="ortho", axis=1)[:, :N_CEPS]


def _embeddings(samples: np.ndarray, regions: list[tuple[float, float]]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """One vector per 1.5 s window of speech: mean and std of c1..c19 over the window's frames."""
    ceps = mfcc(samples)                               # frame i starts at 10 ms * i
    ceps = (ceps - ceps.mean(axis=0)) / (ceps.std(axis=0) + 1e-6)   # CMVN over the clip
    fps = SAMPLE_RATE / 160
    vecs, spans = [], []
    for a, b in regions:
        t = a
        while True:
            end = min(b, t + EMB_WIN_S)
            fa, fb = int(t * fps), int(end * fps)
            if fb - fa >= 30:                          # >= 0.3 s of frames
                seg = ceps[fa:fb, 1:]
                vecs.append(np.concatenate([seg.mean(axis=0), seg.std(axis=0)]))
                spans.append((t, end))
            if end >= b:
                break
            t += EMB_HOP_S
    return (np.asarray(vecs, dtype=np.float64) if vecs else np.zeros((0, 2 * (N_CEPS - 1)))), spans


def cluster(vecs: np.ndarray, distance: float, max_speakers: int) -> np.ndarray:
    """Cluster labels 0.. (average linkage, cosine distance cut at `distance`, at most max_speakers)."""
    if len(vecs) < 2:
        return np.zeros(len(vecs), dtype=int)
    from scipy.cluster.hierarchy import fcluster, linkage

    x = (vecs - vecs.mean(axis=0)) / (vecs.std(axis=0) + 1e-9)     # each statistic on one scale
    z = linkage(x, method="average", metric="cosine")
    labels = fcluster(z, t=distance, criterion="distance")
    if labels.max() > max_speakers:
        labels = fcluster(z, t=max_speakers, criterion="maxclust")
    return labels - 1


def _check(params: Mapping[str, Any]) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"speakers: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    d = p["distance"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < float(d) <= 2.0:
        raise ValueError(f"speakers: distance={d!r} must be a cosine distance in (0, 2], e.g. 1.1")
    m = p["min_speaker_s"]
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= float(m) <= 60.0:
        raise ValueError(f"speakers: min_speaker_s={m!r} must be seconds from 0 to 60, e.g. 2.0")
    k = p["max_speakers"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20:
        raise ValueError(f"speakers: max_speakers={k!r} must be an integer from 1 to 20, e.g. 6")
    return p


def speakers(clip: AudioClip, **params) -> dict:
    """Speech regions, estimated speaker count, turns and seconds per speaker."""
    p = _check(params)
    if clip.sample_rate != SAMPLE_RATE:
        raise ToolFailed(f"speakers needs {SAMPLE_RATE} Hz samples, got {clip.sample_rate} Hz; "
                         f"load the audio with sample_rate={SAMPLE_RATE}")
    samples = np.ascontiguousarray(clip.samples, dtype=np.float32)
    duration = samples.size / SAMPLE_RATE
    probs = speech_probs(samples) if samples.size else np.zeros(0)
    regions = speech_regions(probs, duration)
    vecs, spans = _embeddings(samples, regions)
    labels = cluster(vecs, float(p["distance"]), int(p["max_speakers"]))
    if labels.size:
        if labels.size >= 3:                           # majority filter: one odd window is not a turn
            sm = labels.copy()
            for k in range(1, labels.size - 1):
                if labels[k - 1] == labels[k + 1] != labels[k]:
                    sm[k] = labels[k - 1]
            labels = sm
        secs = {int(c): 0.0 for c in np.unique(labels)}
        for (a, b), c in zip(spans, labels):
            secs[int(c)] += EMB_HOP_S if b - a >= EMB_HOP_S else b - a
        small = [c for c, s in secs.items() if s < float(p["min_speaker_s"])]
        big = [c for c in secs if c not in small]
        if big and small:                              # fold tiny clusters into the nearest big one
            cent = {c: vecs[labels == c].mean(axis=0) for c in secs}
            for c in small:
                near = min(big, key=lambda b: 1 - np.dot(cent[c], cent[b]) /
                           (np.linalg.norm(cent[c]) * np.linalg.norm(cent[b]) + 1e-9))
                labels = np.where(labels == c, near, labels)
        order = {}                                     # rename by first appearance: S1, S2, ...
        for c in labels:
            order.setdefault(int(c), f"S{len(order) + 1}")
        names = [order[int(c)] for c in labels]
    else:
        names = []
    turns: list[dict] = []
    for (a, b), name in zip(spans, names):
        if turns and turns[-1]["speaker"] == name and a <= turns[-1]["end"] + MIN_GAP_S + EMB_HOP_S:
            turns[-1]["end"] = round(max(turns[-1]["end"], b), 2)
        else:
            if turns and turns[-1]["end"] > a:          # windows overlap: cut the turn at the change
                turns[-1]["end"] = round(a, 2)
            turns.append({"speaker": name, "start": round(a, 2), "end": round(b, 2)})
    per = {}
    for t in turns:
        per[t["speaker"]] = round(per.get(t["speaker"], 0.0) + t["end"] - t["start"], 2)
    speech_s = round(sum(b - a for a, b in regions), 2)
    return {
        "n_speakers": len(per) if regions else 0,
        "turns": turns, "n_turns": len(turns), "speaker_seconds": per,
        "speech_regions": [[a, b] for a, b in regions], "speech_s": speech_s,
        "duration_s": round(duration, 3),
        "method": "silero-vad v6 onnx + MFCC statistics, agglomerative clustering",
    }


def _backend(_params: Mapping[str, Any]) -> str:
    from toolcache.registry import package_version as ver
    from toolcache.tools.asr import record_sha256

    return (f"onnxruntime {ver('onnxruntime')} / silero_vad_v6.onnx (faster-whisper {ver('faster-whisper')} "
            f"sha256:{record_sha256('faster-whisper', 'silero_vad_v6.onnx')[:16]}) / numpy MFCC + scipy clustering")


LIMITS = ("Speaker count and turns from MFCC statistics, not a trained speaker-embedding model: reliable "
          "for 1-3 clearly different voices in clean speech; similar voices merge, one voice in changing "
          "conditions can split; overlapped speech goes to one speaker; turns under ~1.5 s are missed; no "
          "names, roles, gender or identity.")

SPECS: list[ToolSpec] = [
    ToolSpec(
        name="speakers",
        description="Who speaks when: speech regions (Silero VAD), estimated speaker count, turns and seconds per speaker",
        version="1", limits=LIMITS, compute=speakers, backend=_backend,
        default_params=dict(DEFAULTS),
    ),
]
