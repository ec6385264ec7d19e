"""Per-version service metrics: Ray Serve custom metrics (exported to Prometheus by Ray) plus a local
mirror of the counters that ``GET /v1/stats`` shows for the answering replica.

Names as Prometheus sees them (Ray prefixes ``ray_``): ``ray_nbmf_requests_total{op,version,outcome}``,
``ray_nbmf_fallbacks_total{version,reason}``, ``ray_nbmf_latency_ms_bucket{op,version}``.
"""
from __future__ import annotations

from collections import Counter

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 120, 200, 500, 1000, 2000, 5000]  # 120: the p95 budget


class ServiceMetrics:
    """Created inside a replica (Ray metrics need a running worker: no import-time side effects)."""

    def __init__(self, component: str):
        from ray.serve import metrics

        tags = ("component",)
        self._requests = metrics.Counter(
            "nbmf_requests", description="Codec requests by operation, encoder version and outcome.",
            tag_keys=tags + ("op", "version", "outcome"))
        self._fallbacks = metrics.Counter(
            "nbmf_fallbacks", description="Encodes not written by the routed version's neural coder (the stub or the "
                                          "version's zstd fallback wrote them).",
            tag_keys=tags + ("version", "reason"))
        self._latency = metrics.Histogram(
            "nbmf_latency_ms", description="Request latency in milliseconds.",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=tags + ("op", "version"))
        self._default = {"component": component}
        self.requests: Counter = Counter()  # (op, version, outcome) -> n
        self.fallbacks: Counter = Counter()  # (version, reason) -> n

    def request(self, op: str, version: str, outcome: str, latency_ms: float, n: int = 1) -> None:
        tags = {**self._default, "op": op, "version": version}
        self._requests.inc(n, tags={**tags, "outcome": outcome})
        self._latency.observe(latency_ms, tags=tags)
        self.requests[(op, version, outcome)] += n

    def fallback(self, version: str, reason: str, n: int = 1) -> None:
        self._fallbacks.inc(n, tags={**self._default, "version": version, "reason": reason})
        self.fallbacks[(version, reason)] += n

    def snapshot(self) -> dict:
        return {"requests": [{"op": o, "version": v, "outcome": r, "count": n}
                             for (o, v, r), n in sorted(self.requests.items())],
                "fallbacks": [{"version": v, "reason": r, "count": n}
                              for (v, r), n in sorted(self.fallbacks.items())]}
