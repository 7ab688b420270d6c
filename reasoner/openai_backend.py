"""`openai` back-end: any OpenAI-compatible chat server (vLLM serving Qwen2-Audio / Qwen2.5-Omni).

Standard library only (urllib). One POST /chat/completions per question with the audio file's
bytes base64-encoded in the user turn, either as
``{"type": "input_audio", "input_audio": {"data": <b64>, "format": "wav"}}`` (OpenAI's audio part,
accepted by vLLM) or as ``{"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64,..."}}``
(vLLM's audio_url part) — option `audio_part`.

With ``audio_part="none"`` no audio is sent: a text-only chat model answers from the question,
the choices and the tool evidence (`chat_messages` builds exactly what is sent, for reuse).

Failures: resets / dropped connections, timeouts, HTTP 5xx and 429 are retried `max_retries`
times with exponential backoff and jitter, then raise ReasonerUnavailable (ReasonerTimeout when
the last attempt timed out) naming the URL and the fix. A refused connection (nothing listens on
that port) raises ReasonerUnavailable at once: waiting does not start a server. HTTP 4xx (unknown
model, bad request) and malformed replies raise ReasonerError at once: retrying cannot fix them.
Redirects are never followed (the API key must not reach another origin): ReasonerError naming
the target origin. `cancel()` aborts in-flight requests (their sockets are shut down), so Ctrl-C
ends a run without waiting up to `timeout_s`.
"""
from __future__ import annotations

import base64
import functools
import http.client
import json
import queue
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import Future
from pathlib import Path

from reasoner.errors import ReasonerError, ReasonerTimeout, ReasonerUnavailable
from reasoner.options import OpenAIOptions, option_names
from reasoner.prompt import DEFAULT_MAX_EVIDENCE_CHARS, build_messages, validate_question
from reasoner.registry import Prepared, Reasoner

_MAX_BACKOFF_S = 30.0
# Audio containers vLLM can decode (it loads the data URL with librosa / soundfile); OpenAI itself
# documents "wav" and "mp3" for input_audio.
_FORMATS = {".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".ogg": "ogg", ".m4a": "m4a", ".webm": "webm"}
# Cap on the reply body we read (bytes): a chat completion for one short answer is a few KB.
_MAX_REPLY_BYTES = 8 * 1024 * 1024

_BEARER_RE = re.compile(r"Bearer\s+[^\s'\"]+")
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


def chat_messages(audio_path: str | Path | None, question: str, choices, evidence: dict | None = None, *,
                  audio_part_style: str = "input_audio",
                  max_evidence_chars: int = DEFAULT_MAX_EVIDENCE_CHARS) -> list[dict]:
    """The chat messages this back-end sends for one question: the prompt text of
    `reasoner.prompt.build_messages`, with the audio part first in the user turn unless
    `audio_part_style` is "none" (text-only reasoner: question, choices and evidence only).
    One function, so a gateway sends exactly what `route` sends."""
    messages = build_messages(question, validate_question(question, choices), evidence,
                              max_evidence_chars=max_evidence_chars)
    if audio_part_style != "none":
        if audio_path is None:
            raise ReasonerError("this reasoner sends the audio but no audio file was given "
                                "(give the clip, or use audio_part='none' for a text-only model)")
        user = messages[-1]
        user["content"] = [audio_part(Path(audio_path), audio_part_style), *user["content"]]
    return messages


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


def origin(url: str) -> str:
    """scheme://host:port of a URL (no userinfo, path or query: safe to print)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib would resend the Authorization header to the new origin (and
    turn the POST into a GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        raise ReasonerError(
            f"reasoner at {req.full_url} answered HTTP {code} redirecting to {origin(target)}; redirects are "
            "not followed so the API key never goes to another origin: pass the final address as --reasoner-url")


class _DaemonPool:
    """A minimal thread pool of daemon threads: an interrupted run exits without joining workers
    still blocked in a request (ThreadPoolExecutor joins them at interpreter exit)."""

    def __init__(self, workers: int, prefix: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{prefix}-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            future, fn, arg = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(arg))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                future.set_exception(exc)

    def submit(self, fn, arg) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, arg))
        return future

    def shutdown(self, wait: bool) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


class OpenAIReasoner(Reasoner):
    """Answers through an OpenAI-compatible HTTP server; thread-safe, one request per question."""

    name = "openai"

    def __init__(self, options: OpenAIOptions) -> None:
        super().__init__(options)
        self._model = options.model
        self._model_lock = threading.Lock()
        self._pool: _DaemonPool | None = None
        self._listing: list | None = None   # GET /models "data", asked at most once
        self._live: set = set()             # open HTTP connections (cancel() shuts their sockets)
        self._live_lock = threading.Lock()
        self._mine = threading.local()      # connections opened by the current thread's attempt
        self._cancelled = False
        self._opener = urllib.request.build_opener(_NoRedirect, self._handler(urllib.request.HTTPHandler,
                                                                             http.client.HTTPConnection),
                                                   self._handler(urllib.request.HTTPSHandler,
                                                                 http.client.HTTPSConnection))

    def _handler(self, base: type, connection_class: type):
        """A urllib handler whose connections register in `_live` while open."""
        owner = self

        def connect(host, **kwargs):
            conn = connection_class(host, **kwargs)
            with owner._live_lock:
                owner._live.add(conn)
            owner._mine.__dict__.setdefault("conns", []).append(conn)
            return conn

        if base is urllib.request.HTTPSHandler:
            class Tracked(base):  # type: ignore[misc, valid-type]
                def https_open(self, req):
                    extra = {"check_hostname": self._check_hostname} if hasattr(self, "_check_hostname") else {}
                    return self.do_open(connect, req, context=self._context, **extra)
        else:
            class Tracked(base):  # type: ignore[misc, valid-type, no-redef]
                def http_open(self, req):
                    return self.do_open(connect, req)

        return Tracked()

    def _forget(self) -> None:
        """Drop this thread's finished connections from `_live`."""
        mine = self._mine.__dict__.pop("conns", [])
        with self._live_lock:
            for conn in mine:
                self._live.discard(conn)

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
        if self._cancelled:
            raise ReasonerUnavailable(f"reasoner request to {url} cancelled (interrupted)")
        request = urllib.request.Request(url, data=body, method=method, headers=self._headers())
        try:
            with self._opener.open(request, timeout=self.options.timeout_s) as response:
                payload = response.read(_MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if self.options.api_key:
                detail = detail.replace(self.options.api_key, "***")
            if exc.code >= 500 or exc.code == 429:
                raise _Retryable(f"HTTP {exc.code}: {detail}") from exc
            hint = ("use a model the server serves (GET /v1/models lists them; pass --reasoner-model)"
                    if exc.code == 404 else
                    "check the API key ($OPENAI_API_KEY)" if exc.code in (401, 403) else
                    "check the request options (model, max_tokens, audio_part) against the server")
            raise ReasonerError(f"reasoner at {url} rejected the request with HTTP {exc.code}: {detail} ({hint})") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ConnectionRefusedError):
                # Nothing listens on that port: retrying (and backing off) cannot start a server.
                raise ReasonerUnavailable(f"reasoner at {url} refused the connection (nothing listens at "
                                          f"{origin(url)}; not retried): {_SERVE_HINT}") from exc
            timed_out = isinstance(exc.reason, (socket.timeout, TimeoutError))
            raise _Retryable(f"{exc.reason}", timed_out=timed_out) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise _Retryable("timed out", timed_out=True) from exc
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            # RemoteDisconnected / IncompleteRead / reset: the server dropped the connection.
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        finally:
            self._forget()
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
                if self._cancelled:
                    raise ReasonerUnavailable(f"reasoner request to {url} cancelled (interrupted)") from exc
                last = exc
        assert last is not None
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if last.timed_out:
            raise ReasonerTimeout(f"reasoner at {url} did not answer within {self.options.timeout_s:g} s "
                                  f"({tries}): raise --timeout, or check the server is not "
                                  "overloaded (lower --concurrency)")
        raise ReasonerUnavailable(f"reasoner at {url} unavailable after {tries} ({last}): {_SERVE_HINT}")

    # -- model -----------------------------------------------------------------------------------
    def models_listing(self) -> list:
        """The server's GET /models "data" list (asked once per reasoner)."""
        with self._model_lock:
            if self._listing is None:
                listing = self._request("GET", self.options.base_url + "/models")
                data = listing.get("data") if isinstance(listing, dict) else None
                self._listing = list(data) if isinstance(data, list) else []
            return self._listing

    @property
    def model(self) -> str:
        """The configured model, else the first one the server lists (asked once)."""
        if not self._model:
            listing = self.models_listing()
            try:
                self._model = str(listing[0]["id"])
            except (KeyError, IndexError, TypeError) as exc:
                raise ReasonerError(f"reasoner at {self.options.base_url}/models lists no model "
                                    "(pass --reasoner-model explicitly)") from exc
        return self._model

    def served_root(self) -> str:
        """What the server really serves under `model`: vLLM's `root` (the weights path / hub id)
        of the model's GET /models entry, else its id; "unlisted" when the server does not list it.
        Asks the server (ReasonerUnavailable when it is down)."""
        name = self.model
        try:
            listing = self.models_listing()
        except ReasonerUnavailable:
            raise
        except ReasonerError:  # the server has no /models (4xx): the name is all we know
            return "unlisted"
        for entry in listing:
            if isinstance(entry, dict) and str(entry.get("id")) == name:
                return str(entry.get("root") or entry.get("id"))
        return "unlisted"

    def cache_identity(self) -> dict:
        """Besides backend/model/prompt/params: the server (base URL) and the weights it serves
        under that name, so another server (or another model behind the same name) misses."""
        identity = super().cache_identity()
        identity["server"] = self.options.base_url
        identity["served_root"] = self.served_root()
        return identity

    # -- answering -------------------------------------------------------------------------------
    def payload(self, item: Prepared) -> dict:
        """The JSON body for one question (audio part first unless audio_part is "none", then the
        prompt text); the same messages as `chat_messages`."""
        messages = [dict(m) for m in item.messages]
        if self.options.audio_part != "none":
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
            self._pool = _DaemonPool(self.options.concurrency, "reasoner-http")
        futures = [self._pool.submit(self._one, item) for item in items]
        results: list = []
        try:
            for future in futures:
                try:
                    results.append(future.result())
                except ReasonerError as exc:
                    results.append(exc)
        except BaseException:  # KeyboardInterrupt while waiting: abort the others, do not wait
            for future in futures:
                future.cancel()
            self.cancel()
            raise
        return results

    def cancel(self) -> None:
        """Abort every in-flight request (shut its socket down) and refuse new ones: the waiting
        threads get an error at once instead of after up to `timeout_s`."""
        self._cancelled = True
        with self._live_lock:
            live = list(self._live)
        for conn in live:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _batch_size(self) -> int:
        # Enough requests in flight to keep every worker busy; results are still in input order.
        return self.options.concurrency * 4

    def _generation_params(self) -> dict:
        return {"temperature": self.options.temperature, "max_tokens": self.options.max_tokens,
                "audio_part": self.options.audio_part, "max_evidence_chars": self.options.max_evidence_chars}

    def close(self) -> None:
        # Idle workers exit at once; after cancel() busy ones are not waited for (daemon threads).
        if self._pool is not None:
            self._pool.shutdown(wait=not self._cancelled)
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
    text = " ".join(body.split())[:300] or str(exc.reason)
    # A server or proxy may quote the request's credentials back: never pass them on.
    return _BEARER_RE.sub("Bearer ***", text)


def create(**options) -> OpenAIReasoner:
    """Factory used by reasoner.create_reasoner("openai", ...)."""
    unknown = sorted(set(options) - set(option_names(OpenAIOptions)))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for reasoner 'openai'; "
                         f"valid: {', '.join(option_names(OpenAIOptions))}")
    return OpenAIReasoner(OpenAIOptions(**options))
