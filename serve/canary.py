"""Canary routing for encode: which encoder version writes a record.

Ray Serve 2.x has no traffic splitting, so it is done here, in the ingress. A record with an id is
sticky: a stable hash of the id maps it to a point in [0, 1); the record goes to the candidate when
that point is below the candidate's share. Raising the share (0.1 -> 0.5 -> 1.0) only moves records
from current to candidate, never back, so a record is re-encoded by at most one new version during
a rollout. Records without an id use a random draw.

Each domain may have a router of its own (``Routing``): a record of that domain is routed by it, every other
record by the default router, as before domains existed.

>>> r = CanaryRouter(current="v1", candidate="v2", share=0.5)
>>> r.choose("record-42") == r.choose("record-42")
True
>>> CanaryRouter(current="v1", candidate="v2", share=0.0).choose("a"), CanaryRouter("v1", "v2", 1.0).choose("a")
('v1', 'v2')
>>> routing = Routing(CanaryRouter("v1"), {"legal": CanaryRouter("v3", candidate="v4", share=1.0)})
>>> routing.choose("a"), routing.choose("a", domain="legal"), routing.choose("a", domain="acme")
('v1', 'v4', 'v1')
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field


def bucket(record_id: str) -> float:
    """Stable point in [0, 1) for a record id: same on every replica, process and Python version.

    (``hash()`` is salted per process, so it would not be sticky across ingress replicas.)

    >>> bucket("record-42") == bucket("record-42"), 0.0 <= bucket("") < 1.0
    (True, True)
    """
    digest = hashlib.blake2b(record_id.encode("utf-8", "surrogatepass"), digest_size=8,
                             person=b"nbmf-canary").digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class CanaryRouter:
    current: str
    candidate: str | None = None
    share: float = 0.0  # fraction of encodes written by the candidate
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self):
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"canary share must be within [0, 1]; got {self.share}")

    def choose(self, record_id: str | None = None) -> str:
        """The version that encodes this record."""
        if self.candidate is None or self.share <= 0.0:
            return self.current
        if self.share >= 1.0:
            return self.candidate
        point = bucket(record_id) if record_id is not None else self.rng.random()
        return self.candidate if point < self.share else self.current

    def describe(self) -> dict:
        return {"current": self.current, "candidate": self.candidate, "canary_share": self.share}


@dataclass(frozen=True)
class Routing:
    """The default router and one per domain that has its own (its own current, candidate and share)."""

    default: CanaryRouter
    domains: Mapping[str, CanaryRouter] = field(default_factory=dict)

    def router(self, domain: str | None = None) -> CanaryRouter:
        return self.default if domain is None else self.domains.get(domain, self.default)

    def choose(self, record_id: str | None = None, domain: str | None = None) -> str:
        """The version that encodes this record of ``domain`` (None, or a domain without a router: the default)."""
        return self.router(domain).choose(record_id)

    def versions(self) -> set[str]:
        """Every version some record may be routed to."""
        routers = [self.default, *self.domains.values()]
        return {v for r in routers for v in (r.current, r.candidate) if v is not None}
