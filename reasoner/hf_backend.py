"""transformers back-ends: `qwen2-audio` (Qwen2-Audio-Instruct) and `qwen2.5-omni` (its Thinker).

The model is loaded on first use (so building a reasoner to read its cache identity is free) from a
local folder or an already-downloaded hub id: HF_HUB_OFFLINE=1 is set, nothing is downloaded.

Audio: loaded with soundfile + soxr (librosa for other containers) as 16 kHz mono float32 in [-1, 1] (the processors' Whisper feature
extractor rate) and given to the processor with the chat-templated prompt, whose audio placeholder
the processor expands to one token per 40 ms of audio. The Whisper feature extractor keeps the
first 30 s of each clip (Qwen2-Audio and Qwen2.5-Omni's audio encoders take 30 s windows).

Generation is greedy (do_sample=False), `max_new_tokens` tokens, left-padded batches of
`batch_size` questions per generate() call in answer_many.

Qwen2.5-Omni: a full checkpoint (model_type "qwen2_5_omni") is loaded with the talker disabled and
answered by its thinker (text only, return_audio off); a thinker-only checkpoint
("qwen2_5_omni_thinker") directly. Its official processor also builds a video processor, which
needs torchvision; when that (or the processor files) is missing, an audio-only processor that
does the same audio steps (Whisper features, placeholder expansion) is used instead.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from reasoner.errors import ReasonerError
from reasoner.options import HFOptions, option_names
from reasoner.registry import Prepared, Reasoner

SAMPLING_RATE = 16_000  # Hz: the Whisper feature extractor of both model families

DEFAULT_MODELS = {"qwen2-audio": "Qwen/Qwen2-Audio-7B-Instruct", "qwen2.5-omni": "Qwen/Qwen2.5-Omni-7B"}

# Qwen2.5-Omni's chat format (system turn, audio wrapped in audio_bos/eos, ChatML turns), used by
# the audio-only processor when the official one cannot be built.
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _audio_token_count(feature_lengths):
    """Audio tokens for mel-frame lengths: two stride-2 reductions (conv, then pooling)."""
    return (((feature_lengths - 1) // 2 + 1) - 2) // 2 + 1


class AudioOnlyOmniProcessor:
    """The audio half of Qwen2_5OmniProcessor (no image/video processor, hence no torchvision)."""

    def __init__(self, tokenizer, feature_extractor, chat_template: str = OMNI_CHAT_TEMPLATE) -> None:
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.chat_template = chat_template
        self.audio_token = getattr(tokenizer, "audio_token", None) or "<|AUDIO|>"

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, tokenize: bool = False) -> str:
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template,
                                                  add_generation_prompt=add_generation_prompt, tokenize=False)

    def __call__(self, text: list[str], audio: list, sampling_rate: int = SAMPLING_RATE,
                 return_tensors: str = "pt", padding: bool = True):
        from transformers import BatchFeature

        features = self.feature_extractor(audio, sampling_rate=sampling_rate, return_attention_mask=True,
                                          padding="max_length", return_tensors="pt")
        feature_mask = features.pop("attention_mask")
        counts = _audio_token_count(feature_mask.sum(-1)).tolist()
        expanded = []
        it = iter(counts)
        for sample in text:
            pieces = sample.split(self.audio_token)
            if len(pieces) - 1 > len(counts):
                raise ReasonerError("more audio placeholders than audio clips in a batch (internal error)")
            out = pieces[0]
            for piece in pieces[1:]:
                out += self.audio_token * next(it) + piece
            expanded.append(out)
        tokens = self.tokenizer(expanded, return_tensors=return_tensors, padding=padding)
        return BatchFeature({**tokens, "input_features": features["input_features"],
                             "feature_attention_mask": feature_mask})

    def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)


class HFReasoner(Reasoner):
    """A transformers audio LLM on one device; loaded lazily, generate() guarded by a lock."""

    name = "hf"

    def __init__(self, options: HFOptions) -> None:
        super().__init__(options)
        self.processor = None
        self.hf_model = None
        self.device = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.options.model

    # -- loading ---------------------------------------------------------------------------------
    def _check_model_location(self) -> None:
        """A model given as a path must be an existing folder (hub ids look like "org/name")."""
        model = self.options.model
        path = Path(model).expanduser()
        looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
        if looks_like_path and not path.is_dir():
            raise ReasonerError(f"model folder not found: {model} (pass a folder holding config.json, "
                                "or a hub id already in the local cache)")

    def _imports(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ReasonerError(f"the {self.name} reasoner needs torch and transformers ({exc.name} is missing): "
                                "pip install -e '.[gpu]' in a checkout of audiorouter") from exc
        return torch, transformers

    def _resolve_device(self, torch):
        device = self.options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ReasonerError("device cuda requested but torch sees no GPU (use --device cpu or auto)")
        dtype_name = self.options.dtype
        if dtype_name == "auto":
            dtype_name = "bfloat16" if device == "cuda" else "float32"  # bf16 halves GPU memory
        return device, getattr(torch, dtype_name)

    def _load_processor(self, transformers):
        raise NotImplementedError

    def _load_model(self, transformers, dtype):
        raise NotImplementedError

    def load(self):
        """Load processor and model now (otherwise done on the first answer); returns (processor, model)."""
        with self._lock:
            if self.hf_model is not None:
                return self.processor, self.hf_model
            self._check_model_location()
            torch, transformers = self._imports()
            device, dtype = self._resolve_device(torch)
            try:
                processor = self._load_processor(transformers)
                model = self._load_model(transformers, dtype)
            except (OSError, ValueError) as exc:  # missing files offline / unrecognised folder
                raise ReasonerError(f"cannot load {self.options.model} offline ({' '.join(str(exc).split())[:200]}): "
                                    f"download it first (`huggingface-cli download {self.options.model}`) "
                                    "or pass a local folder with its config, weights and processor files") from exc
            model.to(device)
            model.eval()
            tokenizer = processor.tokenizer
            tokenizer.padding_side = "left"  # decoder-only batch generation continues from the right edge
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self.processor, self.hf_model, self.device = processor, model, device
            return processor, model

    # -- answering -------------------------------------------------------------------------------
    def _conversation(self, item: Prepared) -> list[dict]:
        messages = [dict(m) for m in item.messages]
        messages[-1]["content"] = [{"type": "audio", "audio": str(item.audio_path)}, *messages[-1]["content"]]
        return messages

    def _load_audio(self, path: Path):
        """16 kHz mono float32 in [-1, 1]. soundfile + soxr (fast); librosa for other containers.

        (librosa.load's first call costs ~10 s of lazy imports on a small CPU; soundfile reads
        wav/flac/ogg/mp3 directly and soxr is the resampler librosa itself uses.)
        """
        import numpy as np
        import soundfile
        import soxr

        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            waveform = data.mean(axis=1)  # mix down to mono
            if rate != SAMPLING_RATE:
                waveform = soxr.resample(waveform, rate, SAMPLING_RATE, quality="HQ")
        except Exception as first:  # noqa: BLE001 - libsndfile raises its own error types
            if path.suffix.lower().lstrip(".").upper() in soundfile.available_formats():
                # a format libsndfile knows (wav, flac, ogg, mp3, ...) that it cannot read: broken file
                raise ReasonerError(f"cannot decode audio {path}: {first} (check the file; re-encode it "
                                    "with sox or ffmpeg)") from first
            try:  # other containers (m4a, webm, ...): librosa / audioread (ffmpeg)
                import librosa

                waveform, _ = librosa.load(str(path), sr=SAMPLING_RATE, mono=True)
            except Exception as exc:  # noqa: BLE001 - audioread raises many types
                raise ReasonerError(f"cannot decode audio {path}: {exc} (convert it to wav with sox or ffmpeg)") from exc
        if waveform.size == 0:
            raise ReasonerError(f"audio {path} is empty (give a clip with sound)")
        return np.ascontiguousarray(waveform, dtype=np.float32)

    def _generate_ids(self, model, inputs):
        return model.generate(**inputs, max_new_tokens=self.options.max_new_tokens, do_sample=False)

    def _generate(self, items: list[Prepared]) -> list:
        processor, model = self.load()
        import torch

        # Decode each clip first: a clip that fails gets its error in its slot, the others still run.
        replies: list = [None] * len(items)
        good: list[int] = []
        audios = []
        for i, item in enumerate(items):
            try:
                audios.append(self._load_audio(item.audio_path))
                good.append(i)
            except ReasonerError as exc:
                replies[i] = exc
        if not good:
            return replies
        texts = [processor.apply_chat_template(self._conversation(items[i]), add_generation_prompt=True,
                                               tokenize=False) for i in good]
        inputs = processor(text=texts, audio=audios, sampling_rate=SAMPLING_RATE, return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()
                  if k not in ("num_audio_tokens",)}
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(model.dtype)
        try:
            with self._lock, torch.inference_mode():
                output = self._generate_ids(model, inputs)
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise ReasonerError(f"{self.name} ran out of memory on {self.device} for a batch of {len(good)} "
                                    "(lower --batch-size, or use --dtype bfloat16)") from exc
            raise
        sequences = output.sequences if hasattr(output, "sequences") else output
        new_tokens = sequences[:, inputs["input_ids"].shape[1]:]  # drop the (left-padded) prompt
        for i, text in zip(good, processor.batch_decode(new_tokens, skip_special_tokens=True)):
            replies[i] = text.strip()
        return replies

    def _batch_size(self) -> int:
        return self.options.batch_size

    def _generation_params(self) -> dict:
        return {"do_sample": False, "max_new_tokens": self.options.max_new_tokens, "dtype": self.options.dtype,
                "max_evidence_chars": self.options.max_evidence_chars}

    def close(self) -> None:
        self.hf_model = None
        self.processor = None


class Qwen2AudioReasoner(HFReasoner):
    name = "qwen2-audio"

    def _load_processor(self, transformers):
        return transformers.AutoProcessor.from_pretrained(self.options.model)

    def _load_model(self, transformers, dtype):
        return transformers.Qwen2AudioForConditionalGeneration.from_pretrained(self.options.model, dtype=dtype)


class Qwen25OmniReasoner(HFReasoner):
    name = "qwen2.5-omni"

    def _model_type(self, transformers) -> str:
        config = transformers.AutoConfig.from_pretrained(self.options.model)
        return config.model_type

    def _load_processor(self, transformers):
        try:
            return transformers.Qwen2_5OmniProcessor.from_pretrained(self.options.model)
        except (ImportError, OSError, TypeError, ValueError, AttributeError):
            # No torchvision (video processor) or no processor files: audio-only processor.
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.options.model)
            features = transformers.WhisperFeatureExtractor.from_pretrained(self.options.model)
            return AudioOnlyOmniProcessor(tokenizer, features)

    def _load_model(self, transformers, dtype):
        model_type = self._model_type(transformers)
        if model_type == "qwen2_5_omni_thinker":
            return transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(self.options.model, dtype=dtype)
        if model_type == "qwen2_5_omni":
            full = transformers.Qwen2_5OmniForConditionalGeneration.from_pretrained(
                self.options.model, dtype=dtype, enable_audio_output=False)  # no talker / token2wav weights
            full.disable_talker()
            return full.thinker  # text answers come from the thinker alone
        raise ReasonerError(f"{self.options.model} is a {model_type!r} model, not Qwen2.5-Omni "
                            "(use --reasoner qwen2-audio for Qwen2-Audio, or pass a Qwen2.5-Omni folder)")


def _create(cls, name: str, options: dict) -> HFReasoner:
    unknown = sorted(set(options) - set(option_names(HFOptions)))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for reasoner {name!r}; "
                         f"valid: {', '.join(option_names(HFOptions))}")
    options = {"model": DEFAULT_MODELS[name], **{k: v for k, v in options.items() if v is not None}}
    return cls(HFOptions(**options))


def create_qwen2_audio(**options) -> Qwen2AudioReasoner:
    """Factory used by reasoner.create_reasoner("qwen2-audio", ...)."""
    return _create(Qwen2AudioReasoner, "qwen2-audio", options)


def create_qwen25_omni(**options) -> Qwen25OmniReasoner:
    """Factory used by reasoner.create_reasoner("qwen2.5-omni", ...)."""
    return _create(Qwen25OmniReasoner, "qwen2.5-omni", options)
