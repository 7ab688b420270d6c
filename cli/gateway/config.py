"""Options of one gateway process (`audiorouter serve`), validated at construction."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# What the reasoner receives of the client's audio: the audio part as sent, or nothing (a text-only
# upstream: question + choices + evidence, the cascade setup of the table's *_then_gpt4o columns).
AUDIO_PARTS = ("keep", "none")

ENV_API_KEY = "AUDIOROUTER_API_KEY"                     # clients must send it as a bearer token
ENV_UPSTREAM_API_KEY = "AUDIOROUTER_UPSTREAM_API_KEY"   # sent to the upstream only


class GatewayConfigError(ValueError):
    """A bad `serve` option (exit 2 through friendly_errors); the message names the fix."""


def check_upstream_url(url: str) -> str:
    """The upstream base URL without a trailing slash; refuses credentials and non-HTTP schemes.

    Credentials in a URL end up in logs, error messages and name resolution: keys go in
    --upstream-api-key / $AUDIOROUTER_UPSTREAM_API_KEY instead.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise GatewayConfigError("--upstream is not a valid URL; give e.g. http://127.0.0.1:8000/v1") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GatewayConfigError("--upstream must be an http(s) URL with a host; give e.g. http://127.0.0.1:8000/v1")
    if parts.username is not None or parts.password is not None:
        raise GatewayConfigError("--upstream must not contain credentials (user:pass@); pass the key with "
                                 f"--upstream-api-key or ${ENV_UPSTREAM_API_KEY}")
    return url.rstrip("/")


@dataclass(frozen=True)
class GatewayConfig:
    """Everything `serve` was told. Sizes in bytes/seconds; limits apply per request."""

    upstream: str | None                  # OpenAI-compatible base URL (None: /v1/route only)
    router: str | None = None             # router folder or bundled name (None = default)
    precision: str = "int8"
    api_key: str | None = field(default=None, repr=False)            # clients' bearer token
    upstream_api_key: str | None = field(default=None, repr=False)   # the upstream's key
    audio_part: str = "keep"
    max_body_bytes: int = 25 * 1024 * 1024     # a 10-min 16 kHz mono 16-bit WAV is ~19 MB, base64 +33%
    max_audio_seconds: float = 600.0           # longer clips are refused (tools decode at most this)
    timeout_s: float = 120.0                   # upstream request timeout (a 7B answer takes seconds)
    tool_timeout_s: float = 120.0              # a tool still running after this fails the request
    max_concurrency: int = 64                  # requests in flight before 429
    tool_workers: int = 2                      # threads running tools (the event loop never does)
    allowed_audio_hosts: tuple[str, ...] = ()  # hosts audio_url may fetch from (off by default)
    decision_log: str | None = None            # JSONL path, off by default
    spool_dir: str | None = None               # where request audio is written for the tools
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.upstream is not None:
            object.__setattr__(self, "upstream", check_upstream_url(self.upstream))
        if self.audio_part not in AUDIO_PARTS:
            raise GatewayConfigError(f"--audio-part must be one of {', '.join(AUDIO_PARTS)} (got {self.audio_part!r})")
        if self.precision not in ("int8", "fp32"):
            raise GatewayConfigError(f"--precision must be one of int8, fp32 (got {self.precision!r})")
        for name, value in (("--max-body-mb", self.max_body_bytes), ("--max-audio-seconds", self.max_audio_seconds),
                            ("--timeout", self.timeout_s), ("--tool-timeout", self.tool_timeout_s),
                            ("--max-concurrency", self.max_concurrency), ("--tool-workers", self.tool_workers)):
            if not (isinstance(value, (int, float)) and value == value and value > 0):
                raise GatewayConfigError(f"{name} must be a positive number (got {value!r})")
        if self.api_key is not None and not self.api_key.strip():
            raise GatewayConfigError(f"--api-key is empty; give a key or unset ${ENV_API_KEY}")

    @classmethod
    def from_env(cls, **options) -> "GatewayConfig":
        """Options as given, the keys taken from the environment when not given."""
        options.setdefault("api_key", None)
        options.setdefault("upstream_api_key", None)
        if options["api_key"] is None:
            options["api_key"] = os.environ.get(ENV_API_KEY) or None
        if options["upstream_api_key"] is None:
            options["upstream_api_key"] = os.environ.get(ENV_UPSTREAM_API_KEY) or None
        return cls(**options)
