"""The gateway's client to the upstream OpenAI-compatible server (httpx, async).

Redirects are never followed: a 3xx would carry the upstream key to whatever origin the Location
names (the key leak found in the reasoner back-end); the gateway answers 502 and says why.
Failures become `UpstreamError` with the HTTP status the gateway answers (502 for refused,
dropped or 5xx, 504 for a timeout) and an OpenAI-style error type.
"""
from __future__ import annotations

from typing import Any, AsyncIterator


class UpstreamError(Exception):
    def __init__(self, message: str, status: int = 502, kind: str = "upstream_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind


class Upstream:
    """One pooled async connection set to the upstream base URL."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float, max_connections: int = 256):
        import httpx

        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url + "/", headers=headers, follow_redirects=False,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=False)  # never pick a proxy (or its credentials) up from the environment

    async def aclose(self) -> None:
        await self._client.aclose()

    def _fail(self, exc: Exception) -> UpstreamError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(f"the upstream {self.base_url} did not answer in time; raise --timeout or check "
                                 "the server's load", 504, "upstream_timeout")
        if isinstance(exc, httpx.ConnectError):
            return UpstreamError(f"cannot connect to the upstream {self.base_url}; check that the server runs and "
                                 "--upstream is right", 502, "upstream_unavailable")
        return UpstreamError(f"the upstream {self.base_url} closed the connection ({type(exc).__name__}); check "
                             "its logs", 502, "upstream_unavailable")

    def _check(self, response) -> None:
        if 300 <= response.status_code < 400:
            raise UpstreamError(f"the upstream answered a redirect ({response.status_code}) that the gateway does "
                                "not follow (its key stays with the upstream origin); point --upstream at the "
                                "final URL", 502, "upstream_redirect")
        if response.status_code >= 500:
            raise UpstreamError(f"the upstream failed with HTTP {response.status_code}; check its logs", 502,
                                "upstream_error")

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, bytes, str]:
        """(status, body bytes, content type). 4xx are returned (the client's problem), 5xx raise."""
        import httpx

        try:
            response = await self._client.request(method, path.lstrip("/"), json=json)
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None
        self._check(response)
        return response.status_code, response.content, response.headers.get("content-type", "application/json")

    async def stream(self, path: str, json: Any) -> tuple[int, str, AsyncIterator[bytes]]:
        """Open a streaming POST; (status, content type, byte iterator that closes the response)."""
        import httpx

        request = self._client.build_request("POST", path.lstrip("/"), json=json)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None
        try:
            self._check(response)
        except UpstreamError:
            await response.aclose()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError:
                return  # the upstream dropped mid-stream: the client sees the stream end
            finally:
                await response.aclose()

        return response.status_code, response.headers.get("content-type", "text/event-stream"), chunks()
