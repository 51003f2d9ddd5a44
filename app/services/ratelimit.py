"""Per-key rate limiting: a token bucket per API key, kept in the API process's memory.

Each API process limits on its own, so N processes behind a balancer allow N times the rate; that
is the documented trade-off for needing no shared store."""

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """`rate` tokens a second, at most `burst` saved; one request takes one token."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if the request may go on, else the seconds to wait before the next one would be allowed."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait_s)))
