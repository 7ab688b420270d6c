"""The gateway's ASGI application (Starlette): route, run the tool, forward to the upstream.

POST /v1/chat/completions  audio question -> routing decision -> tool evidence (cached) -> upstream,
                           the upstream's answer returned with an `audiorouter` object attached
                           (and X-Audiorouter-Action); `stream: true` passes the upstream's SSE
                           through; a request without audio goes straight through.
POST /v1/route             routing (and, with audio, the tool) only: no upstream (edge form).
GET  /v1/models            proxied.   GET /healthz   GET /metrics (Prometheus)

The event loop never runs a model: routing goes through RouteBatcher (a thread, batched), tools run
in a thread pool, audio is decoded in a thread. A client that goes away cancels its upstream call.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Awaitable

from cli.gateway.config import GatewayConfig
from cli.gateway.parsing import AudioRef, RequestError, encode_forwarded, parse_chat, route_body
from cli.gateway.upstream import UpstreamError

_DIRECT_NONE = "none"   # X-Audiorouter-Action of a request that carried no audio
_DURATION_MEMO = 4096   # validated clips remembered (sha256 -> duration), ~100 B each


def error_response(status: int, message: str, kind: str, headers: dict | None = None):
    """OpenAI-style JSON error body."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


class Gateway:
    """State shared by the requests of one app: router, batcher, upstream client, pools, metrics."""

    def __init__(self, config: GatewayConfig, router=None):
        from cli.gateway.metrics import Metrics

        self.config = config
        self.router = router
        self.metrics = Metrics()
        self.batcher = None
        self.upstream = None
        self.fetcher = None
        self.tools: ThreadPoolExecutor | None = None
        self.in_flight = 0
        self.spool = Path(config.spool_dir or tempfile.mkdtemp(prefix="audiorouter-gateway-"))
        self._log = None
        self._durations: dict[str, float] = {}   # sha256 -> seconds of clips already validated
        # sha256 of a clip's base64 text -> sha256 of its bytes: a clip sent again is not
        # base64-decoded again (0.9 ms for 430 KB; hashing the text costs 0.25 ms)
        self._clips: dict[bytes, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        import httpx

        from cli import pipeline
        from cli.gateway.batcher import RouteBatcher
        from cli.gateway.upstream import Upstream

        if self.router is None:
            self.router = pipeline.load_router(self.config.router, self.config.precision, threads=1)
        pipeline.check_router_tools(self.router)
        self.direct = pipeline.direct_action(self.router)
        self.batcher = RouteBatcher(self.router)
        self.batcher.start()
        self.tools = ThreadPoolExecutor(self.config.tool_workers, thread_name_prefix="audiorouter-tool")
        if self.config.upstream is not None:
            self.upstream = Upstream(self.config.upstream, self.config.upstream_api_key, self.config.timeout_s,
                                     max_connections=self.config.max_concurrency + 8)
        # Remote audio (allow-listed hosts only) is fetched by a client that carries no key.
        self.fetcher = httpx.AsyncClient(follow_redirects=False, timeout=self.config.timeout_s, trust_env=False)
        self.spool.mkdir(parents=True, exist_ok=True)
        if self.config.decision_log:
            path = Path(self.config.decision_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(path, "a", encoding="utf-8")

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.fetcher is not None:
            await self.fetcher.aclose()
        if self.tools is not None:
            self.tools.shutdown(wait=False, cancel_futures=True)
        if self._log is not None:
            self._log.close()

    # -- pieces of a request -----------------------------------------------------------------------
    def authorised(self, request) -> bool:
        if self.config.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.config.api_key.encode())

    async def read_json(self, request) -> Any:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the request body is {int(declared)} bytes, over the limit of {limit}; send a "
                               "shorter clip or raise --max-body-mb", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the request body is over the limit of {limit} bytes; send a shorter clip or "
                                   "raise --max-body-mb", 413)
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError("the request body is not valid JSON; send an OpenAI chat completion request") from None

    async def fetch_remote(self, url: str) -> bytes:
        from urllib.parse import urlsplit

        host = urlsplit(url).hostname or ""
        if host not in self.config.allowed_audio_hosts:
            raise RequestError(f"audio_url host {host!r} is not allow-listed; send the audio inline (input_audio or "
                               "a data: URL) or start serve with --allow-audio-host HOST", 400)
        import httpx

        try:
            async with self.fetcher.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RequestError(f"audio_url answered HTTP {response.status_code} (redirects are not "
                                       "followed); give a URL that serves the file", 400)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.config.max_body_bytes:
                        raise RequestError("the audio at audio_url is over the body size limit; send a shorter clip",
                                           413)
                return bytes(data)
        except httpx.HTTPError as exc:
            raise RequestError(f"cannot fetch audio_url ({type(exc).__name__}); check the URL", 400) from None

    async def materialise(self, ref: AudioRef) -> tuple[str, str, float]:
        """The clip as a spooled file named by its sha256: (path, sha256, duration in seconds).

        Content-addressed, so a repeated clip reuses its file (and toolcache's hash memo); a clip
        whose base64 text was seen before is not decoded again."""
        text_key = sha = None
        if ref.b64 is not None:
            text_key = hashlib.sha256(ref.b64.encode("utf-8", "surrogatepass")).digest()
            sha = self._clips.get(text_key)
        if sha is not None:  # this text decoded before: its file and duration may be known
            path = self.spool / f"{sha}.{ref.fmt}"
            known = self._durations.get(sha)
            if known is not None and path.exists():
                return self._check_duration(str(path), sha, known)
        data = ref.decode() if ref.b64 is not None else await self.fetch_remote(ref.url)  # strict base64
        if not data:
            raise RequestError("the audio part is empty; send the audio file's bytes", 400)
        sha = hashlib.sha256(data).hexdigest()
        path = self.spool / f"{sha}.{ref.fmt}"
        known = self._durations.get(sha)
        if known is None or not path.exists():
            if not path.exists():
                tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            from toolcache.errors import AudioError

            loop = asyncio.get_running_loop()
            try:
                known = await loop.run_in_executor(self.tools, _probe_duration, str(path), sha)
            except AudioError:  # its text names the spool path: not for the client
                path.unlink(missing_ok=True)
                raise RequestError("cannot decode the audio: not an audio file, or a corrupt/truncated one; send a "
                                   "wav, flac, ogg or mp3 file", 400) from None
            if len(self._durations) >= _DURATION_MEMO:
                self._durations.clear()
            self._durations[sha] = known
        if text_key is not None:
            if len(self._clips) >= _DURATION_MEMO:
                self._clips.clear()
            self._clips[text_key] = sha
        return self._check_duration(str(path), sha, known)

    def _check_duration(self, path: str, sha: str, duration: float) -> tuple[str, str, float]:
        if duration > self.config.max_audio_seconds:
            raise RequestError(f"the audio is {duration:.1f} s long, over the limit of {self.config.max_audio_seconds:g} s;"
                               " send a shorter clip or raise --max-audio-seconds", 413)
        return path, sha, duration

    async def route(self, question: str, choices) -> dict:
        t0 = time.perf_counter()
        routed = await self.batcher.route(question, choices)
        self.metrics.routing.observe(time.perf_counter() - t0)
        self.metrics.routing_memo.labels("hit" if routed.get("memo") else "miss").inc()
        return routed

    async def run_tool(self, action: str, path: str, sha256: str | None = None) -> tuple[dict | None, dict]:
        """(evidence or None, info for the response). A failing tool degrades to a direct answer.
        A cache hit is read inline (~0.06 ms: cheaper than the hop to a pool thread); a miss, or a
        cache that cannot be read, goes to the tool pool, which computes or reports the error."""
        import toolcache

        t0 = time.perf_counter()
        if self.config.use_cache:
            try:
                evidence = toolcache.lookup(action, path, sha256=sha256)
            except toolcache.ToolcacheError:
                evidence = None  # the pool's run() says what is wrong
            if evidence is not None:
                return evidence, self._tool_done(action, evidence, t0)
        loop = asyncio.get_running_loop()
        try:
            evidence = await asyncio.wait_for(
                loop.run_in_executor(self.tools, lambda: toolcache.run(action, path, cache=self.config.use_cache)),
                self.config.tool_timeout_s)
        except asyncio.TimeoutError:
            self.metrics.errors.labels("tool_timeout").inc()
            return None, {"tool_ms": round((time.perf_counter() - t0) * 1e3, 3), "cache_hit": False,
                          "tool_error": f"{action} took over {self.config.tool_timeout_s:g} s; answered without evidence"}
        except toolcache.ToolcacheError as exc:
            self.metrics.errors.labels("tool_failed").inc()
            return None, {"tool_ms": round((time.perf_counter() - t0) * 1e3, 3), "cache_hit": False,
                          "tool_error": " ".join(str(exc).split())}
        return evidence, self._tool_done(action, evidence, t0)

    def _tool_done(self, action: str, evidence: dict, t0: float) -> dict:
        elapsed = time.perf_counter() - t0
        self.metrics.tool.labels(action).observe(elapsed)
        hit = bool(evidence.get("cached"))
        self.metrics.tool_cache.labels("hit" if hit else "miss").inc()
        return {"tool_ms": round(elapsed * 1e3, 3), "cache_hit": hit}

    def log_decision(self, record: dict) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record, sort_keys=True) + "\n")
            self._log.flush()

    def decision(self, routed: dict, info: dict) -> dict:
        return {"action": routed["action"], "probs": {k: round(float(v), 6) for k, v in routed["probs"].items()},
                "routing_ms": float(routed.get("elapsed_ms", 0.0)), "truncated": bool(routed.get("truncated")),
                "memo": bool(routed.get("memo", False)),
                "tool_ms": info.get("tool_ms", 0.0), "cache_hit": info.get("cache_hit", False),
                **({"tool_error": info["tool_error"]} if "tool_error" in info else {})}


def _probe_duration(path: str, sha256: str) -> float:
    """Validate the clip (decodes its first second) and return its full duration in seconds."""
    from toolcache.audio import load_audio

    return float(load_audio(path, max_seconds=1.0, sha256=sha256).original_duration_s)


async def _until_disconnected(request) -> None:
    """Returns when the client closes its connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ClientDisconnected(Exception):
    """The client closed its connection before the answer: its upstream call was cancelled."""


async def _race_disconnect(request, work: Awaitable):
    """Run `work`; cancel it if the client goes away first (then raise ClientDisconnected)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected()


def create_app(config: GatewayConfig, router=None):
    """The Starlette app for `config` (router: an already loaded textrouter Router, for tests/benches)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    gw = Gateway(config, router)

    @asynccontextmanager
    async def lifespan(app):
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    def guarded(endpoint_name: str, handler, limited: bool = True):
        async def endpoint(request):
            rid = uuid.uuid4().hex
            if not gw.authorised(request):
                gw.metrics.errors.labels("unauthorised").inc()
                return error_response(401, "missing or wrong API key; send Authorization: Bearer <key> (the key "
                                      "given to serve with --api-key)", "authentication_error")
            if limited and gw.in_flight >= config.max_concurrency:
                gw.metrics.errors.labels("saturated").inc()
                return error_response(429, f"the gateway is at its limit of {config.max_concurrency} requests in "
                                      "flight; retry after the Retry-After delay", "rate_limit_error",
                                      headers={"Retry-After": "1"})
            release = limited  # only model-serving requests count towards the limit and the gauge
            if limited:
                gw.in_flight += 1
                gw.metrics.in_flight.inc()
            try:
                response = await handler(request, rid)
                if isinstance(response, StreamingResponse) and limited:
                    release = False  # released when the stream ends (see _streamed)
                response.headers["X-Request-Id"] = rid
                return response
            except RequestError as exc:
                gw.metrics.errors.labels(exc.kind if exc.status != 413 else "too_large").inc()
                return error_response(exc.status, str(exc), exc.kind)
            except UpstreamError as exc:
                gw.metrics.errors.labels(exc.kind).inc()
                return error_response(exc.status, str(exc), exc.kind)
            except ClientDisconnected:
                # nobody to answer: an empty 499 (nginx's "client closed request") that uvicorn
                # drops, not an exception it would log with a traceback for every disconnect
                gw.metrics.cancelled.inc()
                return Response(status_code=499)
            except Exception as exc:  # noqa: BLE001 - a bug must still answer in OpenAI's shape
                from textrouter.errors import RouterError

                if isinstance(exc, RouterError):
                    gw.metrics.errors.labels("routing").inc()
                    return error_response(400, " ".join(str(exc).split()), "invalid_request_error")
                gw.metrics.errors.labels("internal").inc()
                return error_response(500, f"internal gateway error ({type(exc).__name__}); see the gateway log",
                                      "internal_error")
            finally:
                if release:
                    gw.in_flight -= 1
                    gw.metrics.in_flight.dec()
        endpoint.__name__ = endpoint_name
        return endpoint

    def _streamed(chunks):
        async def relay():
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                gw.in_flight -= 1
                gw.metrics.in_flight.dec()
        return relay()

    async def chat(request, rid: str):
        body = await gw.read_json(request)
        req = parse_chat(body)
        if gw.upstream is None:
            raise RequestError("this gateway has no upstream (started without --upstream); use /v1/route or start "
                               "serve with --upstream http://host:8000/v1", 503, "upstream_unavailable")
        routed, info, evidence = None, {}, None
        if req.audio is not None:
            path, sha, _ = await gw.materialise(req.audio)
            routed = await gw.route(req.question, req.choices)
            if routed["action"] != gw.direct:
                evidence, info = await gw.run_tool(routed["action"], path, sha)
            from cli.pipeline import evidence_for_prompt

            forwarded = encode_forwarded(req, evidence_for_prompt(evidence), config.audio_part)
        else:
            forwarded = encode_forwarded(req, None, config.audio_part)
        action = routed["action"] if routed else _DIRECT_NONE
        gw.metrics.requests.labels("chat", action).inc()
        decision = gw.decision(routed, info) if routed else None
        headers = {"X-Audiorouter-Action": action}
        t0 = time.perf_counter()
        if req.stream:
            status, ctype, chunks = await _race_disconnect(request, gw.upstream.stream("chat/completions", forwarded))
            gw.metrics.upstream.observe(time.perf_counter() - t0)
            _log(rid, req, decision, evidence, status, t0)
            if decision is not None:
                headers["X-Audiorouter-Decision"] = json.dumps(decision, separators=(",", ":"))
            return StreamingResponse(_streamed(chunks), status_code=status, media_type=ctype, headers=headers)
        status, content, ctype = await _race_disconnect(request, gw.upstream.request("POST", "chat/completions",
                                                                                     forwarded))
        gw.metrics.upstream.observe(time.perf_counter() - t0)
        _log(rid, req, decision, evidence, status, t0)
        if decision is not None and status == 200 and "json" in ctype:
            try:
                doc = json.loads(content)
            except json.JSONDecodeError:
                raise UpstreamError("the upstream answered 200 with a body that is not JSON; check its logs") from None
            if isinstance(doc, dict):
                doc["audiorouter"] = decision
                return JSONResponse(doc, headers=headers)
        return Response(content, status_code=status, media_type=ctype, headers=headers)

    def _log(rid, req, decision, evidence, status, t0) -> None:
        if gw._log is None:
            return
        record = {"ts": round(time.time(), 3), "request_id": rid, "status": status,
                  "upstream_ms": round((time.perf_counter() - t0) * 1e3, 3)}
        if decision is not None:  # the same decision the response carries
            record.update({
                "question_sha256": hashlib.sha256(req.question.encode()).hexdigest(),
                "choices": req.choices, "action": decision["action"], "probs": decision["probs"],
                "tool_ms": decision["tool_ms"], "cache_hit": decision["cache_hit"]})
            if evidence is not None:
                record["tool"] = {"name": evidence.get("tool"), "version": evidence.get("tool_version"),
                                  "audio_sha256": evidence.get("audio_sha256"), "params": evidence.get("params")}
        else:
            record["action"] = _DIRECT_NONE
        gw.log_decision(record)

    async def route_only(request, rid: str):
        body = await gw.read_json(request)
        question, choices, ref, run_tool = route_body(body)
        path = sha = None
        if ref is not None:
            path, sha, _ = await gw.materialise(ref)
        routed = await gw.route(question, choices)
        evidence, info = None, {}
        if run_tool and routed["action"] != gw.direct:
            evidence, info = await gw.run_tool(routed["action"], path, sha)
        gw.metrics.requests.labels("route", routed["action"]).inc()
        return JSONResponse({"routing": gw.decision(routed, info), "evidence": evidence},
                            headers={"X-Audiorouter-Action": routed["action"]})

    async def models(request, rid: str):
        if gw.upstream is None:
            return JSONResponse({"object": "list", "data": []})
        status, content, ctype = await gw.upstream.request("GET", "models")
        return Response(content, status_code=status, media_type=ctype)

    async def healthz(request):
        return JSONResponse({"status": "ok", "actions": list(gw.router.actions) if gw.router else [],
                             "upstream": config.upstream, "in_flight": gw.in_flight})

    async def metrics(request, rid: str):
        body, ctype = gw.metrics.render()
        return Response(body, media_type=ctype)

    routes = [
        Route("/v1/chat/completions", guarded("chat", chat), methods=["POST"]),
        Route("/v1/route", guarded("route", route_only), methods=["POST"]),
        Route("/v1/models", guarded("models", models, limited=False), methods=["GET"]),
        Route("/metrics", guarded("metrics", metrics, limited=False), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gw
    return app
