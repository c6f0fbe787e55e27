"""In-process fixed-window rate limits (seed 003): a budget per key per minute.

Each process counts on its own; several workers behind one address multiply the
budget by their number, which is acceptable for limits meant to slow down guessing
and runaway clients.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

WINDOW_SECONDS = 60
#: Past this many keys, windows that have ended are dropped.
PRUNE_ABOVE = 10_000


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    allowed: bool
    limit: int
    remaining: int
    #: Unix time (seconds) when the current window ends.
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self, window: int = WINDOW_SECONDS) -> None:
        self.window = window
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window start, hits)
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, now: float | None = None) -> RateLimitStatus:
        """Count one request against `key`; `allowed` is False once `limit` is spent."""
        moment = time.time() if now is None else now
        start = int(moment // self.window) * self.window
        with self._lock:
            if len(self._counts) > PRUNE_ABOVE:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == start}
            window_start, hits = self._counts.get(key, (start, 0))
            if window_start != start:
                hits = 0
            hits += 1
            self._counts[key] = (start, hits)
        return RateLimitStatus(
            allowed=hits <= limit,
            limit=limit,
            remaining=max(0, limit - hits),
            reset=start + self.window,
        )
