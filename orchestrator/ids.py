"""Identifiers: time-ordered UUIDs (version 7), so ids sort by creation time."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = (0, 0)  # (milliseconds, 74 random bits) of the previous id


def new_id() -> str:
    """A UUIDv7 string: 48 bits of Unix milliseconds, then random bits (RFC 9562).

    Ids made in one process increase strictly: within a millisecond (or if the clock
    steps back) the random part of the previous id is incremented (RFC 9562, method 2).
    """
    global _last
    with _lock:
        millis = time.time_ns() // 1_000_000
        last_millis, last_random = _last
        if millis <= last_millis:
            millis, random = last_millis, last_random + 1
        else:
            random = int.from_bytes(os.urandom(10), "big") >> 6  # 74 bits
        _last = (millis, random)
    rand_a, rand_b = (random >> 62) & 0xFFF, random & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0x2 << 62 | rand_b
    return str(uuid.UUID(int=value))
