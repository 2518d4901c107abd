"""Per-key token-bucket rate limits (partner keys), in process."""

from __future__ import annotations

import math
from dataclasses import dataclass
from uuid import UUID


@dataclass
class TokenBucket:
    """`rate` requests per second with bursts up to one second's worth (at least one)."""

    rate: float
    tokens: float
    updated: float

    def take(self, *, now: float, rate: float) -> float:
        """Take one token; returns 0 when allowed, else the seconds to wait."""
        self.rate = rate
        self.tokens = min(max(rate, 1.0), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class RateLimiter:
    """Per-key token buckets in this process.

    Limitation: with N API processes a key gets up to N × its rate; a shared limiter (Redis,
    or Postgres) would be needed to enforce it across processes.
    """

    def __init__(self) -> None:
        self._buckets: dict[UUID, TokenBucket] = {}

    def check(self, key: UUID, *, rate: float, now: float) -> int:
        """0 when allowed, else the whole seconds to put in Retry-After."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate=rate, tokens=rate, updated=now)
        wait = bucket.take(now=now, rate=rate)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def forget(self, key: UUID) -> None:
        self._buckets.pop(key, None)
