"""Options of the reasoner back-ends: frozen dataclasses validated on construction.

Invalid values raise ValueError naming the valid choices / range (the CLI prints it as one line).
No heavy imports here: the CLI can build and print options without torch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from reasoner.prompt import DEFAULT_MAX_EVIDENCE_CHARS

ENV_URL = "AUDIOROUTER_REASONER_URL"
ENV_API_KEY = "OPENAI_API_KEY"

# How the audio travels in an OpenAI-compatible request (both accepted by vLLM's chat API):
#   input_audio: {"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}
#   audio_url:   {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,<base64>"}}
#   none:        no audio at all: a text-only chat model answers from question, choices and the
#                tool evidence (a cascade reasoner, like the bundled table's `*_then_gpt4o` columns)
AUDIO_PARTS = ("input_audio", "audio_url", "none")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def check_base_url(url: str) -> None:
    """ValueError (message without the secret) for a URL that is not http(s)://HOST[:PORT][/path]
    or that carries credentials: userinfo would be printed in messages and sent to name resolution."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"reasoner URL must look like http://HOST:PORT/v1, got {mask_url(url)!r}")
    if "@" in parsed.netloc:
        raise ValueError(f"reasoner URL {mask_url(url)!r} holds credentials (user:password@); remove them and "
                         f"pass the key with ${ENV_API_KEY} instead")


def mask_url(url: str) -> str:
    """The URL with any userinfo replaced by ***."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return str(url)
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{tail}"


def _check_range(name: str, value, low, high) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not (low <= value <= high):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def _check_choice(name: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


@dataclass(frozen=True)
class OpenAIOptions:
    """Options of the `openai` back-end (any OpenAI-compatible chat server, e.g. vLLM).

    base_url: API root such as ``http://localhost:8000/v1`` ("/v1" is appended when the URL has no
        path); empty -> $AUDIOROUTER_REASONER_URL.
    model: the served model name (``vllm serve <model>``); empty -> the first of GET /v1/models.
    api_key: bearer token; empty -> $OPENAI_API_KEY, or none (vLLM without --api-key).
    timeout_s: seconds per HTTP attempt (connect + reply).
    max_retries: extra attempts after a connection error / timeout / 5xx / 429 (4xx never retried).
    backoff_s: first retry delay in seconds; doubles per retry, with +-50 % jitter, capped at 30 s.
    concurrency: parallel requests in answer_many (vLLM batches concurrent requests itself).
    temperature, max_tokens: generation; temperature 0 = greedy, deterministic answers.
    audio_part: "input_audio" (default), "audio_url" (a data: URL) or "none" (text-only model: no
        audio is sent, only question, choices and evidence), see AUDIO_PARTS.
    max_evidence_chars: tool JSON shown to the model is cut to about this many characters.
    """

    base_url: str = ""
    model: str = ""
    api_key: str = ""
    timeout_s: float = 120.0
    max_retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 8
    temperature: float = 0.0
    max_tokens: int = 64
    audio_part: str = "input_audio"
    max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS

    def __post_init__(self) -> None:
        base_url = (self.base_url or os.environ.get(ENV_URL, "")).strip()
        if not base_url:
            raise ValueError(f"base_url is not set: pass --reasoner-url http://HOST:8000/v1 or set ${ENV_URL}")
        check_base_url(base_url)
        parsed = urlparse(base_url)
        base_url = base_url.rstrip("/")
        if parsed.path in ("", "/"):
            base_url += "/v1"
        object.__setattr__(self, "base_url", base_url)
        object.__setattr__(self, "api_key", self.api_key or os.environ.get(ENV_API_KEY, ""))
        if not isinstance(self.model, str):
            raise ValueError(f"model must be a string (the served model name), got {self.model!r}")
        _check_range("timeout_s", self.timeout_s, 0.01, 3600)
        _check_int("max_retries", self.max_retries, 0, 10)
        _check_range("backoff_s", self.backoff_s, 0.0, 60)
        _check_int("concurrency", self.concurrency, 1, 256)
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_int("max_tokens", self.max_tokens, 1, 32768)
        _check_choice("audio_part", self.audio_part, AUDIO_PARTS)
        _check_int("max_evidence_chars", self.max_evidence_chars, 100, 200_000)


@dataclass(frozen=True)
class HFOptions:
    """Options of the transformers back-ends (`qwen2-audio`, `qwen2.5-omni`).

    model: hub id or local folder (weights must already be on disk: the hub is used offline).
    device: "auto" (cuda when available, else cpu), "cpu" or "cuda".
    dtype: "auto" (bfloat16 on cuda, float32 on cpu) or an explicit torch dtype name.
    batch_size: questions per generate() call in answer_many (left-padded batch).
    max_new_tokens: generated tokens per answer (greedy decoding).
    max_evidence_chars: tool JSON shown to the model is cut to about this many characters.
    """

    model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 4
    max_new_tokens: int = 64
    max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model is not set: pass a hub id already downloaded "
                             "(e.g. Qwen/Qwen2-Audio-7B-Instruct) or a local model folder")
        _check_choice("device", self.device, DEVICES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_int("batch_size", self.batch_size, 1, 1024)
        _check_int("max_new_tokens", self.max_new_tokens, 1, 8192)
        _check_int("max_evidence_chars", self.max_evidence_chars, 100, 200_000)


def option_names(options_type: type) -> list[str]:
    """Field names of an options dataclass (to tell a user which options exist)."""
    return [f.name for f in dataclasses.fields(options_type)]
