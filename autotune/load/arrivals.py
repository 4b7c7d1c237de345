"""When each request of a benchmark is sent: all at once, or Poisson arrivals at a rate."""

from __future__ import annotations

import random


def arrivals(count: int, *, rate: float | None, seed: int) -> list[float]:
    """Poisson arrival offsets in seconds (exponential gaps), or none for all at once."""
    if rate is None or rate <= 0:
        return []
    rng = random.Random(seed)
    now, out = 0.0, []
    for _ in range(count):
        out.append(now)
        now += rng.expovariate(rate)
    return out
