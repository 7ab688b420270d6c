"""A small, real OpenAI-compatible chat server for tests (stdlib HTTP on 127.0.0.1).

It answers POST /v1/chat/completions and GET /v1/models like vLLM does, with a deterministic
answer policy and injectable faults, and records every request so tests can assert on what really
crossed the wire. Importable from any test (pytest puts tests/ on sys.path):

    from openai_server import OpenAITestServer

    with OpenAITestServer() as server:                       # ephemeral port, background thread
        r = reasoner.create_reasoner("openai", base_url=server.url, model=server.model)
        r.answer(wav, "What is heard?", ["a dog", "a cat"])  # -> server.requests[-1] holds the body

Answer policy (`default_policy`, replace with `policy=callable(body) -> str`), in order:
  1. a marker ``[[answer: <option text or letter>]]`` in the prompt text -> that option;
  2. an option whose text appears in the tool evidence JSON of the prompt -> that option;
  3. otherwise option A.  The reply reads "(X) option text".

Faults: `faults` is a list consumed one per request (then `default_fault`), each one of
  "ok", "500", "503", "429", "404", "slow" (sleep `slow_s` then answer),
  "malformed" (200 with a non-JSON body), "drop" (close the socket without replying),
  "redirect" (302 to `redirect_to` + the request path: another origin, e.g. a second server),
  "401echo" (401 whose message quotes the request's Authorization header, as a careless proxy
  does: tests check the client never prints it).
A request for a model not in `models` gets a vLLM-style 404 as well. `roots` maps a served name to
the weights it really serves (vLLM's `root` field of GET /v1/models; default: the name itself).

Recorded: `requests` (parsed JSON bodies + decoded audio bytes; `record_bodies=False` keeps only
path/fault/time, for memory benches), `request_count`, `max_in_flight`, `paths`. The listen backlog
is 128 (http.server's default of 5 made 16 concurrent clients slower than 4). The server serves at most `max_requests` requests (then 503) and bodies up to
`max_body_bytes` (then 413), and `stop()` (or leaving the `with`) shuts it down and wakes any
sleeping "slow" handlers.

Run by hand for manual CLI checks:  python tests/openai_server.py --port 8011
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FAULTS = ("ok", "500", "503", "429", "404", "slow", "malformed", "drop", "redirect", "401echo")
MARKER_RE = re.compile(r"\[\[answer:\s*(.+?)\s*\]\]", re.IGNORECASE)
OPTION_RE = re.compile(r"^\(([A-Z])\) (.+)$", re.MULTILINE)
DEFAULT_MODEL = "test-audio-llm"


def prompt_text_of(body: dict) -> str:
    """All text parts of all messages, joined by newlines."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(texts)


def default_policy(body: dict) -> str:
    """Marker in the prompt > option named in the evidence JSON > option A."""
    text = prompt_text_of(body)
    options = OPTION_RE.findall(text)  # [(letter, option text), ...] from the "(A) ..." lines
    if not options:
        return "I cannot find the options."
    marker = MARKER_RE.search(text)
    if marker:
        wanted = marker.group(1)
        for letter, option in options:
            if wanted.lower() in (letter.lower(), option.lower()):
                return f"({letter}) {option}"
    evidence_start = text.find("Auxiliary evidence")
    if evidence_start >= 0:
        # the evidence JSON is the first line starting with "{" after the header
        lines = text[evidence_start:].splitlines()
        evidence = next((line for line in lines if line.startswith("{")), "").lower()
        named = [(l, o) for l, o in options if o.lower() in evidence]
        if named:
            letter, option = max(named, key=lambda lo: len(lo[1]))
            return f"({letter}) {option}"
    letter, option = options[0]
    return f"({letter}) {option}"


def decode_audio_parts(body: dict) -> list[tuple[str, bytes]]:
    """(format, raw bytes) of every input_audio / audio_url data part in the request."""
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "input_audio":
                audio = part["input_audio"]
                found.append((audio.get("format", ""), base64.b64decode(audio["data"], validate=True)))
            elif part.get("type") == "audio_url":
                url = part["audio_url"]["url"]
                head, _, data = url.partition(",")
                fmt = head.removeprefix("data:audio/").removesuffix(";base64")
                found.append((fmt, base64.b64decode(data, validate=True)))
    return found


class _Httpd(ThreadingHTTPServer):
    # Listen backlog (pending connections the kernel queues): 5 by default in socketserver, which
    # refused/retried bursts of 16+ concurrent clients; vLLM (uvicorn) uses 2048.
    request_queue_size = 128


class OpenAITestServer:
    """Threaded HTTP server speaking enough of the OpenAI chat API for the reasoner client."""

    def __init__(self, policy: Callable[[dict], str] | None = None, models: tuple[str, ...] = (DEFAULT_MODEL,),
                 faults: list[str] | None = None, default_fault: str = "ok", slow_s: float = 5.0,
                 delay_s: float = 0.0, max_requests: int = 500, max_body_bytes: int = 64 * 1024 * 1024,
                 host: str = "127.0.0.1", port: int = 0, roots: dict[str, str] | None = None,
                 redirect_to: str = "", record_bodies: bool = True) -> None:
        for fault in [*(faults or []), default_fault]:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; valid: {', '.join(FAULTS)}")
        self.policy = policy or default_policy
        self.models = tuple(models)
        self.faults = list(faults or [])
        self.default_fault = default_fault
        self.slow_s = slow_s          # seconds a "slow" request sleeps before answering
        self.delay_s = delay_s        # seconds every request takes (to observe concurrency)
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.roots = dict(roots or {})
        self.redirect_to = redirect_to.rstrip("/")  # origin a "redirect" fault sends the client to
        self.record_bodies = record_bodies
        # {"path", "body", "audio": [(fmt, bytes)], "fault", "t" (monotonic s), "headers"}
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.request_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Httpd((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """API root to pass as base_url."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return self.models[0]

    def start(self) -> "OpenAITestServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-test-server:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes "slow" handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "OpenAITestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling ------------------------------------------------------------------------
    def _next_fault(self) -> str:
        with self._lock:
            return self.faults.pop(0) if self.faults else self.default_fault

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: headers and body go out in two writes; with Nagle on, the body waited for the
            # client's delayed ACK (40 ms on Linux) on every keep-alive request.
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send_json(self, status: int, data: dict) -> None:
                raw = json.dumps(data).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _send_stream(self, model: str, count: int, text: str) -> None:
                """SSE as vLLM sends it: one chat.completion.chunk per word, then [DONE]."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")   # no length: the stream ends with the socket
                self.end_headers()
                self.close_connection = True
                words = text.split(" ")
                for i, word in enumerate(words):
                    chunk = {"id": f"chatcmpl-test-{count}", "object": "chat.completion.chunk",
                             "created": int(time.time()), "model": model,
                             "choices": [{"index": 0, "delta": {"content": word if i == 0 else " " + word},
                                          "finish_reason": "stop" if i == len(words) - 1 else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _error(self, status: int, message: str, kind: str) -> None:
                self._send_json(status, {"object": "error", "message": message, "type": kind,
                                         "code": status, "error": {"message": message, "type": kind, "code": status}})

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                server.paths.append(self.path)
                if self.path.rstrip("/") == "/v1/models":
                    self._send_json(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "test", "root": server.roots.get(m, m)}
                        for m in server.models]})
                else:
                    self._error(404, f"no route {self.path}", "NotFoundError")

            def do_POST(self) -> None:  # noqa: N802
                server.paths.append(self.path)
                with server._lock:
                    server.request_count += 1
                    count = server.request_count
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._post(count)
                except OSError:  # BrokenPipe / reset
                    pass  # the client gave up (timeout test): nothing to answer
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _post(self, count: int) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > server.max_body_bytes:
                    self.close_connection = True
                    return self._error(413, f"body over {server.max_body_bytes} bytes", "BadRequestError")
                raw = self.rfile.read(length)
                if count > server.max_requests:
                    return self._error(503, f"test server request limit {server.max_requests} reached", "ServiceUnavailable")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}", "NotFoundError")
                fault = server._next_fault()
                record = {"path": self.path, "fault": fault, "t": time.monotonic(), "body": None, "audio": [],
                          "headers": dict(self.headers) if server.record_bodies else {}}
                server.requests.append(record)
                if server.delay_s:
                    server._stopping.wait(server.delay_s)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)  # close without a status line
                    return
                if fault in ("500", "503"):
                    return self._error(int(fault), "injected failure", "InternalServerError")
                if fault == "429":
                    return self._error(429, "injected rate limit", "RateLimitError")
                if fault == "redirect":
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "401echo":
                    return self._error(401, f"bad credentials {self.headers.get('Authorization')!r}",
                                       "AuthenticationError")
                if fault == "slow":
                    server._stopping.wait(server.slow_s)
                if fault == "malformed":
                    body = b'{"choices": [ this is not json'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                try:
                    body = json.loads(raw)
                    audio = decode_audio_parts(body)
                    if server.record_bodies:
                        record["body"], record["audio"] = body, audio
                except (json.JSONDecodeError, KeyError, ValueError) as exc:
                    return self._error(400, f"bad request body: {exc}", "BadRequestError")
                model = body.get("model")
                if fault == "404" or model not in server.models:
                    return self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                text = server.policy(body)
                if body.get("stream"):
                    return self._send_stream(model, count, text)
                self._send_json(200, {
                    "id": f"chatcmpl-test-{count}", "object": "chat.completion", "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0},
                })

        return Handler


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the test OpenAI-compatible server in the foreground.")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds every request takes")
    parser.add_argument("--no-record", action="store_true", help="keep no request bodies (memory benches)")
    parser.add_argument("--max-requests", type=int, default=500, help="then 503 (a runaway client stops)")
    args = parser.parse_args()
    server = OpenAITestServer(models=(args.model,), port=args.port, delay_s=args.delay,
                              record_bodies=not args.no_record, max_requests=args.max_requests)
    print(f"serving {server.url} (model {args.model}); Ctrl-C to stop", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
