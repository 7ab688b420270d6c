"""Prometheus metrics of one gateway, in its own registry (two apps in one process never clash)."""
from __future__ import annotations

# Latency buckets in seconds: routing is ~0.2-10 ms, a cached tool < 5 ms, a computed one seconds.
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("audiorouter_requests", "Requests handled, by endpoint and routing action.",
                                ["endpoint", "action"], registry=r)
        self.errors = Counter("audiorouter_errors", "Requests that ended in an error, by kind.", ["kind"], registry=r)
        self.in_flight = Gauge("audiorouter_in_flight", "Requests being handled now.", registry=r)
        self.routing = Histogram("audiorouter_routing_seconds", "Router decision time.", buckets=_FAST_BUCKETS,
                                 registry=r)
        self.routing_memo = Counter("audiorouter_routing_memo", "Router decisions by memo outcome (hit: the same "
                                    "question and choices were routed before).", ["outcome"], registry=r)
        self.tool = Histogram("audiorouter_tool_seconds", "Tool time (cache hit or compute), by tool.", ["tool"],
                              buckets=_SLOW_BUCKETS, registry=r)
        self.upstream = Histogram("audiorouter_upstream_seconds", "Upstream time to the response headers.",
                                  buckets=_SLOW_BUCKETS, registry=r)
        self.tool_cache = Counter("audiorouter_tool_cache", "Tool calls by cache outcome (hit or miss).",
                                  ["outcome"], registry=r)
        self.cancelled = Counter("audiorouter_cancelled", "Requests whose client went away before the answer.",
                                 registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
