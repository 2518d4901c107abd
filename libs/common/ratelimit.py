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


class FailureLimiter:
    """At most `limit` failures per key within `window` seconds (failed logins), in process.

    A blocked key stays blocked until its oldest failure in the window ages out, whatever is
    tried meanwhile (a right password included): guessing gains nothing from the block. Keys
    are strings such as `account:<username>` or `address:<ip>`.
    """

    def __init__(self, *, window: float, max_keys: int = 100_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, key: str, *, limit: int, now: float) -> int:
        """0 when another attempt is allowed, else the whole seconds to wait."""
        times = self._recent(key, now)
        if len(times) < limit:
            return 0
        return max(1, math.ceil(times[-limit] + self.window - now))

    def failed(self, key: str, *, now: float) -> None:
        if len(self._failures) >= self.max_keys:  # bounded memory under a spray of names
            self._failures = {
                k: v for k, v in self._failures.items() if v and now - v[-1] < self.window
            }
        self._failures.setdefault(key, []).append(now)

    def cancel(self, key: str, *, at: float) -> None:
        """Withdraw one failure counted at `at` (an attempt counted in advance that succeeded)."""
        times = self._failures.get(key)
        if times and at in times:
            times.remove(at)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)
