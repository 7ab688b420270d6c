"""`audiorouter serve`: the OpenAI-compatible routing gateway (see cli/gateway and docs/serve.md)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from cli import options as opt
from cli.errors import friendly_errors


def serve(
    upstream: Optional[str] = typer.Option(None, "--upstream", help="OpenAI-compatible base URL of the audio LLM "
                                           "server, e.g. http://127.0.0.1:8000/v1 (vLLM). Without it only "
                                           "/v1/route answers."),
    router_dir: Optional[Path] = opt.ROUTER_DIR,
    precision: str = opt.PRECISION,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 to accept other machines)."),
    port: int = typer.Option(8100, "--port", help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer key clients must send (default: "
                                          "$AUDIOROUTER_API_KEY; none = open)."),
    upstream_api_key: Optional[str] = typer.Option(None, "--upstream-api-key", help="Key sent to the upstream only "
                                                   "(default: $AUDIOROUTER_UPSTREAM_API_KEY)."),
    audio_part: str = typer.Option("keep", "--audio-part", help="What the upstream gets of the audio: keep (an "
                                   "audio LLM) or none (a text-only LLM: question, choices and evidence)."),
    max_body_mb: float = typer.Option(25.0, "--max-body-mb", help="Largest request body, MB (base64 audio included)."),
    max_audio_seconds: float = typer.Option(600.0, "--max-audio-seconds", help="Longest clip accepted, seconds."),
    timeout: float = typer.Option(120.0, "--timeout", help="Upstream request timeout, seconds."),
    tool_timeout: float = typer.Option(120.0, "--tool-timeout", help="A tool slower than this answers without "
                                       "evidence, seconds."),
    max_concurrency: int = typer.Option(64, "--max-concurrency", help="Requests in flight before the gateway answers "
                                        "429 with Retry-After."),
    tool_workers: int = typer.Option(2, "--tool-workers", help="Threads running tools (cache hits are ~0.1 ms)."),
    allow_audio_host: List[str] = typer.Option([], "--allow-audio-host", help="Host an audio_url may be fetched from "
                                               "(repeatable; off by default: inline audio only)."),
    decision_log: Optional[Path] = typer.Option(None, "--decision-log", help="Append one JSON line per routed "
                                                "request (id, question hash, action, probabilities, tool, latency)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute tool outputs (still stored)."),
) -> None:
    """Serve the router as an OpenAI-compatible gateway in front of vLLM (or any chat server)."""
    with friendly_errors():
        missing = [m for m in ("starlette", "uvicorn", "httpx", "aiohttp", "prometheus_client") if not _importable(m)]
        if missing:
            raise ValueError(f"the gateway needs {', '.join(missing)} (the serve extra); install it with "
                             "pip install -e '.[serve]' in a checkout of audiorouter")
        from cli.gateway.app import create_app
        from cli.gateway.config import GatewayConfig

        config = GatewayConfig.from_env(
            upstream=upstream, router=None if router_dir is None else str(router_dir), precision=precision,
            api_key=api_key, upstream_api_key=upstream_api_key, audio_part=audio_part,
            max_body_bytes=int(max_body_mb * 1024 * 1024), max_audio_seconds=max_audio_seconds, timeout_s=timeout,
            tool_timeout_s=tool_timeout, max_concurrency=max_concurrency, tool_workers=tool_workers,
            allowed_audio_hosts=tuple(allow_audio_host), decision_log=None if decision_log is None else str(decision_log),
            use_cache=not no_cache)
        from cli import pipeline

        # bad router: one line before listening. One onnxruntime thread per session call: the
        # gateway routes one question per core in parallel (cli/gateway/batcher.py)
        router = pipeline.load_router(router_dir, precision, threads=1)
        pipeline.check_router_tools(router)
        app = create_app(config, router=router)
        import socket

        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:  # port taken, address not on this machine, ...
            sock.close()
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or "
                             "--host") from None
        sock.listen(2048)  # a deep backlog: bursts of clients wait in the kernel, not refused
        bound = sock.getsockname()[1]
        # A status line on stderr (stdout stays free): tests and scripts read the bound port from it.
        print(f"audiorouter gateway on http://{host}:{bound}/v1 (router {pipeline.router_label(router_dir)}, "
              f"actions {', '.join(router.actions)}; upstream {config.upstream or 'none: /v1/route only'})",
              file=sys.stderr, flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=5, lifespan="on"))
        server.run(sockets=[sock])

def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
