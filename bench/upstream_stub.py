"""An OpenAI-compatible upstream for load benches: the answers of tests/openai_server.py on an
asyncio server (uvicorn), so its own latency tail stays small under 32 concurrent clients.

    python bench/upstream_stub.py --port 0 --delay-ms 100

Why not tests/openai_server.py itself: a thread per connection under the GIL. At 32 clients with
430 KB bodies its threads queue for the GIL while parsing, and its p99 swings by tens of ms from
one run to the next, which hides what a gateway in front of it adds. Here one event loop parses
each body (json + strict base64 of the audio, as vLLM must) and answers after `--delay-ms` of
model time (asyncio.sleep: no CPU, like a GPU doing the work). Prints `serving URL` on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from openai_server import DEFAULT_MODEL, decode_audio_parts, default_policy  # noqa: E402


def make_app(delay_s: float, model: str):
    count = 0

    async def read_body(receive) -> bytes:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    async def send_json(send, status: int, doc: dict) -> None:
        raw = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})

    async def app(scope, receive, send):
        nonlocal count
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"].rstrip("/")
        if scope["method"] == "GET" and path == "/v1/models":
            return await send_json(send, 200, {"object": "list", "data": [{"id": model, "object": "model"}]})
        if scope["method"] != "POST" or path != "/v1/chat/completions":
            return await send_json(send, 404, {"error": {"message": f"no route {path}", "code": 404}})
        raw = await read_body(receive)
        try:
            body = json.loads(raw)
            decode_audio_parts(body)
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            return await send_json(send, 400, {"error": {"message": f"bad request body: {exc}", "code": 400}})
        count += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        text = default_policy(body)
        await send_json(send, 200, {
            "id": f"chatcmpl-stub-{count}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(text.split()), "total_tokens": 0}})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="model time of every answer (ms)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    print(f"serving http://127.0.0.1:{sock.getsockname()[1]}/v1 (model {args.model})", flush=True)
    server = uvicorn.Server(uvicorn.Config(make_app(args.delay_ms / 1e3, args.model), log_level="warning",
                                           access_log=False, lifespan="on"))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
