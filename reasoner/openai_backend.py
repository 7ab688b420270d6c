"""`openai` back-end: any OpenAI-compatible chat server (vLLM serving Qwen2-Audio / Qwen2.5-Omni).

Standard library only (urllib). One POST /chat/completions per question with the audio file's
bytes base64-encoded in the user turn, either as
``{"type": "input_audio", "input_audio": {"data": <b64>, "format": "wav"}}`` (OpenAI's audio part,
accepted by vLLM) or as ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..."}}``
(vLLM's audio_url part) — option `audio_part`.

Failures: connection refused / reset / dropped, timeouts, HTTP 5xx and 429 are retried
`max_retries` times with exponential backoff and jitter, then raise ReasonerUnavailable
(ReasonerTimeout when the last attempt timed out) naming the URL and the fix. HTTP 4xx (unknown
model, bad request) and malformed replies raise ReasonerError at once: retrying cannot fix them.
"""
from __future__ import annotations

import base64
import functools
import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reasoner.errors import ReasonerError, ReasonerTimeout, ReasonerUnavailable
from reasoner.options import OpenAIOptions, option_names
from reasoner.registry import Prepared, Reasoner

_MAX_BACKOFF_S = 30.0
# Audio containers vLLM can decode (it loads the data URL with librosa / soundfile); OpenAI itself
# documents "wav" and "mp3" for input_audio.
_FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".m4a": "m4a", ".webm": "webm"}
# Cap on the reply body we read (bytes): a chat completion for one short answer is a few KB.
_MAX_REPLY_BYTES = 8 * 1024 * 1024

_SERVE_HINT = "start it, e.g. `vllm serve Qwen/Qwen2-Audio-7B-Instruct`, or point --reasoner-url / $AUDIOROUTER_REASONER_URL at a running server"


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix (connection, timeout, 5xx, 429)."""

    def __init__(self, reason: str, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.timed_out = timed_out


@functools.lru_cache(maxsize=8)
def _b64_file(path: str, mtime_ns: int, size: int) -> str:
    """Base64 of a file, memoised: `collect` sends the same clip once per action (direct + tools).
    mtime/size are part of the key so an edited file is re-read."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def audio_part(path: Path, style: str) -> dict:
    """The chat content part carrying the audio file's bytes, base64-encoded, unchanged."""
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ReasonerError(f"audio format {path.suffix!r} of {path.name} cannot be sent; "
                            f"use one of {', '.join(sorted(_FORMATS))} (convert with sox or ffmpeg)")
    try:
        stat = path.stat()
        data = _b64_file(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ReasonerError(f"cannot read audio {path}: {exc.strerror or exc} (check the file and its permissions)") from exc
    if style == "audio_url":
        return {"type": "audio_url", "audio_url": {"url": f"data:audio/{fmt};base64,{data}"}}
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


class OpenAIReasoner(Reasoner):
    """Answers through an OpenAI-compatible HTTP server; thread-safe, one request per question."""

    name = "openai"

    def __init__(self, options: OpenAIOptions) -> None:
        super().__init__(options)
        self._model = options.model
        self._model_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- HTTP ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.options.base_url + "/chat/completions"

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.options.api_key:
            headers["Authorization"] = f"Bearer {self.options.api_key}"
        return headers

    def _attempt(self, method: str, url: str, body: bytes | None) -> dict:
        """One HTTP exchange -> parsed JSON; _Retryable or ReasonerError on failure."""
        request = urllib.request.Request(url, data=body, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                payload = response.read(_MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from exc
            hint = ("use a model the server serves (GET /v1/models lists them; pass --reasoner-model)"
                    if exc.code == 404 else
                    "check the API key ($OPENAI_API_KEY)" if exc.code in (401, 403) else
                    "check the request options (model, max_tokens, audio_part) against the server")
            raise ReasonerError(f"reasoner at {url} rejected the request with HTTP {exc.code}: {detail} ({hint})") from exc
        except urllib.error.URLError as exc:
            timed_out = isinstance(exc.reason, (socket.timeout, TimeoutError))
            raise _Retryable(f"{exc.reason}", timed_out=timed_out) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise _Retryable("timed out", timed_out=True) from exc
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            # RemoteDisconnected / IncompleteRead / reset: the server dropped the connection.
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        if len(payload) > _MAX_REPLY_BYTES:
            raise ReasonerError(f"reasoner at {url} sent a reply over {_MAX_REPLY_BYTES} bytes "
                                "(is the URL an OpenAI-compatible API root?)")
        try:
            return json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            snippet = payload[:80].decode("utf-8", "replace")
            raise ReasonerError(f"reasoner at {url} replied with malformed JSON ({exc.msg if hasattr(exc, 'msg') else exc}; "
                                f"starts {snippet!r}): check that the URL is an OpenAI-compatible API root") from exc

    def _request(self, method: str, url: str, body: bytes | None = None) -> dict:
        """HTTP with bounded retries: 1 + max_retries attempts, exponential backoff with jitter."""
        attempts = 1 + self.options.max_retries
        last: _Retryable | None = None
        for attempt in range(attempts):
            if attempt:
                delay = min(_MAX_BACKOFF_S, self.options.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.5))  # jitter: clients do not retry in lockstep
            try:
                return self._attempt(method, url, body)
            except _Retryable as exc:
                last = exc
        assert last is not None
        if last.timed_out:
            raise ReasonerTimeout(f"reasoner at {url} did not answer within {self.options.timeout_s:g} s "
                                  f"({attempts} attempts): raise --timeout, or check the server is not "
                                  "overloaded (lower --concurrency)")
        raise ReasonerUnavailable(f"reasoner at {url} unavailable after {attempts} attempts ({last}): {_SERVE_HINT}")

    # -- model -----------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The configured model, else the first one the server lists (asked once)."""
        if not self._model:
            with self._model_lock:
                if not self._model:
                    listing = self._request("GET", self.options.base_url + "/models")
                    try:
                        self._model = str(listing["data"][0]["id"])
                    except (KeyError, IndexError, TypeError) as exc:
                        raise ReasonerError(f"reasoner at {self.options.base_url}/models lists no model "
                                            "(pass --reasoner-model explicitly)") from exc
        return self._model

    # -- answering -------------------------------------------------------------------------------
    def payload(self, item: Prepared) -> dict:
        """The JSON body for one question (audio part first, then the prompt text)."""
        messages = [dict(m) for m in item.messages]
        user = messages[-1]
        user["content"] = [audio_part(item.audio_path, self.options.audio_part), *user["content"]]
        return {"model": self.model, "messages": messages, "temperature": self.options.temperature,
                "max_tokens": self.options.max_tokens, "stream": False}

    def _one(self, item: Prepared) -> tuple[str, float]:
        start = time.perf_counter()
        body = json.dumps(self.payload(item)).encode("utf-8")
        reply = self._request("POST", self.url, body)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ReasonerError(f"reasoner at {self.url} replied without choices[0].message.content "
                                f"(got keys {sorted(reply) if isinstance(reply, dict) else type(reply).__name__}): "
                                "check that the server speaks the OpenAI chat API") from exc
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ReasonerError(f"reasoner at {self.url} replied with non-text content {type(content).__name__}")
        return content, time.perf_counter() - start

    def _generate(self, items: list[Prepared]) -> list:
        if len(items) == 1:
            return [self._one(items[0])]
        self.model  # resolve the model once before fanning out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.options.concurrency,
                                            thread_name_prefix="reasoner-http")
        futures = [self._pool.submit(self._one, item) for item in items]
        results: list = []
        for future in futures:
            try:
                results.append(future.result())
            except ReasonerError as exc:
                results.append(exc)
        return results

    def _batch_size(self) -> int:
        # Enough requests in flight to keep every worker busy; results are still in input order.
        return self.options.concurrency * 4

    def _generation_params(self) -> dict:
        return {"temperature": self.options.temperature, "max_tokens": self.options.max_tokens,
                "audio_part": self.options.audio_part, "max_evidence_chars": self.options.max_evidence_chars}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI / vLLM: {"error": {"message": ...}}), one line, short."""
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status code alone is still useful
        return exc.reason or ""
    try:
        data = json.loads(body)
        message = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("message")
        if message:
            body = str(message)
    except (json.JSONDecodeError, AttributeError):
        pass
    return " ".join(body.split())[:300] or str(exc.reason)


def create(**options) -> OpenAIReasoner:
    """Factory used by reasoner.create_reasoner("openai", ...)."""
    unknown = sorted(set(options) - set(option_names(OpenAIOptions)))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for reasoner 'openai'; "
                         f"valid: {', '.join(option_names(OpenAIOptions))}")
    return OpenAIReasoner(OpenAIOptions(**options))
