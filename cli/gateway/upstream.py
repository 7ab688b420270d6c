"""The gateway's client to the upstream OpenAI-compatible server (aiohttp, async).

aiohttp, not httpx: at 32 clients with 430 KB bodies httpx's request path was half of the
gateway's event-loop time (py-spy, bench_serve); aiohttp's C HTTP parser costs a fraction.

Redirects are never followed: a 3xx would carry the upstream key to whatever origin the Location
names (the key leak found in the reasoner back-end); the gateway answers 502 and says why.
Failures become `UpstreamError` with the HTTP status the gateway answers (502 for refused,
dropped or 5xx, 504 for a timeout) and an OpenAI-style error type.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator

_JSON = {"Content-Type": "application/json"}


class UpstreamError(Exception):
    def __init__(self, message: str, status: int = 502, kind: str = "upstream_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind


class Upstream:
    """One pooled async connection set to the upstream base URL. Create it inside the event loop."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int = 256):
        import aiohttp

        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # keepalive 4 s: under uvicorn's (vLLM's) 5 s idle timeout, so a pooled connection is
        # dropped here before the server closes it under a request
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=4.0)
        # sock_read: the longest wait for the next bytes (like httpx's read timeout), so a long
        # stream that keeps sending is never cut; connect: the TCP handshake
        timeout = aiohttp.ClientTimeout(total=None, connect=min(10.0, timeout_s), sock_read=timeout_s)
        self._session = aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout,
            trust_env=False)  # never pick a proxy (or its credentials) up from the environment

    def _url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    async def aclose(self) -> None:
        await self._session.close()

    def _fail(self, exc: BaseException) -> UpstreamError:
        import aiohttp

        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamError(f"the upstream {self.base_url} did not answer in time; raise --timeout or check "
                                 "the server's load", 504, "upstream_timeout")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamError(f"cannot connect to the upstream {self.base_url}; check that the server runs and "
                                 "--upstream is right", 502, "upstream_unavailable")
        return UpstreamError(f"the upstream {self.base_url} closed the connection ({type(exc).__name__}); check "
                             "its logs", 502, "upstream_unavailable")

    def _check(self, status: int) -> None:
        if 300 <= status < 400:
            raise UpstreamError(f"the upstream answered a redirect ({status}) that the gateway does "
                                "not follow (its key stays with the upstream origin); point --upstream at the "
                                "final URL", 502, "upstream_redirect")
        if status >= 500:
            raise UpstreamError(f"the upstream failed with HTTP {status}; check its logs", 502,
                                "upstream_error")

    async def request(self, method: str, path: str, content: bytes | None = None) -> tuple[int, bytes, str]:
        """(status, body bytes, content type); `content`: a JSON body already encoded. 4xx are
        returned (the client's problem), 5xx raise."""
        import aiohttp

        headers = _JSON if content is not None else None
        try:
            async with self._session.request(method, self._url(path), data=content, headers=headers,
                                             allow_redirects=False) as response:
                self._check(response.status)
                body = await response.read()
                return response.status, body, response.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._fail(exc) from None

    async def stream(self, path: str, content: bytes) -> tuple[int, str, AsyncIterator[bytes]]:
        """Open a streaming POST of a JSON body already encoded; (status, content type, byte
        iterator that closes the response)."""
        import aiohttp

        try:
            response = await self._session.post(self._url(path), data=content, headers=_JSON, allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._fail(exc) from None
        try:
            self._check(response.status)
        except UpstreamError:
            response.release()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return  # the upstream dropped mid-stream: the client sees the stream end
            finally:
                response.close()

        return response.status, response.headers.get("Content-Type", "text/event-stream"), chunks()
