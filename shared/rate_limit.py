"""Request rate limits per write key and per client address (ingest and query).

Token buckets held in the process's memory: a request takes one token; tokens come back at
``rate`` per second up to ``burst``. No Redis round trip on the hot path, so a limit holds per
process: N processes behind a balancer admit N times the configured rate (size the setting
per process; see README). An empty bucket is a 429 with ``Retry-After``, the seconds until a
token is back, rounded up; the SDKs wait at least that long before retrying (nothing is lost).

Cost: one dictionary look-up and a few float operations per check (the bench measures it:
``bench/ratelimit.py``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from shared.environments import Environment
from shared.http import ApiError
from shared.settings import Settings

#: Buckets kept per limiter before idle ones are dropped (a flood of new addresses or keys
#: must not grow memory for ever).
MAX_BUCKETS = 100_000


class RateLimiter:
    """``rate`` requests per second per name, ``burst`` at once; ``rate <= 0`` admits all."""

    __slots__ = ("_buckets", "burst", "field", "rate", "what")

    def __init__(self, what: str, field: str, rate: float, burst: float) -> None:
        self.what = what
        self.field = field
        self.rate = rate
        self.burst = max(burst, 1.0)
        #: name -> [tokens, monotonic time of that count]
        self._buckets: dict[str, list[float]] = {}

    def wait(self, name: str, now: float | None = None) -> float:
        """Take a token for ``name``: 0 when admitted, else the seconds until one is back."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(name)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_idle(now)
            self._buckets[name] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def check(self, name: str) -> None:
        """Raise the 429 :class:`ApiError` (with ``Retry-After``) when ``name`` is over."""
        wait = self.wait(name)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"too many requests for this {self.what}: at most {self.rate:g} per second; "
                f"retry after {seconds} s",
                self.field,
                headers={"Retry-After": str(seconds)},
            )

    def _drop_idle(self, now: float) -> None:
        """Forget buckets that are full again (their owners lose nothing); if none is, all."""
        full = [
            k
            for k, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()


class RequestLimits:
    """The two limits a service applies: per client address (before anything else is read)
    and per API key (once the key is known)."""

    __slots__ = ("address", "key")

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        return cls(
            settings.rate_limit_key_per_second,
            settings.rate_limit_address_per_second,
            settings.rate_limit_burst_seconds,
        )

    def check_address(self, scope: Any) -> None:
        """The client address limit for an ASGI ``scope`` (uvicorn has already replaced the
        address by X-Forwarded-For's when the peer is a trusted proxy)."""
        client = scope.get("client")
        self.address.check(client[0] if client else "")

    def check_key(self, env: Environment) -> None:
        """The API key limit: one bucket per environment and kind of key."""
        self.key.check(f"{env.id}{'s' if env.secret else 'w'}")

    def __init__(self, per_key: float, per_address: float, burst_seconds: float) -> None:
        self.key = RateLimiter("API key", "authorization", per_key, per_key * burst_seconds)
        self.address = RateLimiter(
            "client address", "address", per_address, per_address * burst_seconds
        )
