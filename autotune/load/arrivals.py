"""When each request of a benchmark is sent: all at once, Poisson or gamma arrivals at a rate,
a ramp-up to that rate, or a trace's own timestamps."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from autotune.load.request import Request


@dataclass(frozen=True)
class Arrivals:
    """The arrival process of a benchmark (the same offsets for the same seed in every trial)."""

    rate: float | None = None
    """Requests per second; None sends them all at once (or ``--concurrency`` at a time)."""
    burstiness: float = 1.0
    """Shape of the gamma-distributed gaps: 1 is Poisson, below 1 burstier, above 1 steadier."""
    ramp_up_s: float = 0.0
    """The rate rises linearly from near 0 to ``rate`` over this many seconds."""
    trace_speed: float | None = None
    """Replay the requests' own ``timestamp`` gaps, divided by this; None: no trace."""

    def at_rate(self, rate: float) -> Arrivals:
        """The same shape at another rate (a capacity search); never a trace replay."""
        return replace(self, rate=rate, trace_speed=None)

    def offsets(self, requests: Sequence[Request], *, seed: int) -> list[float]:
        """Send offsets in seconds from the start, one per request; [] for all at once."""
        return arrivals(len(requests), rate=self.rate, seed=seed)


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
