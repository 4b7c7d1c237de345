"""When each request of a benchmark is sent: all at once, Poisson or gamma arrivals at a rate,
a ramp-up to that rate, or a trace's own timestamps.

* Rate: gaps are gamma-distributed with shape ``burstiness`` and mean ``1/rate`` (scale
  ``1/(rate*burstiness)``), as ``vllm bench serve --burstiness`` draws them; ``burstiness`` 1 is
  a Poisson process (exponential gaps), and the gaps' coefficient of variation is
  ``1/sqrt(burstiness)``.
* Ramp-up: the instantaneous rate rises linearly from 0 at the start to ``rate`` at
  ``ramp_up_s``, then stays at ``rate``: ``rate(t) = rate * min(1, t / ramp_up_s)``. The same
  unit-mean gamma gaps are drawn in the process's own clock (the expected number of arrivals
  so far, ``L(t) = rate * t**2 / (2 * ramp_up_s)`` during the ramp, then
  ``rate * (ramp_up_s / 2 + t - ramp_up_s)``) and mapped back to seconds by inverting ``L``.
* Trace: request ``i`` is sent at ``(timestamp_i - earliest timestamp) / trace_speed``; the
  requests keep their file order in the benchmark and each is sent at its own offset, so an
  unsorted file is still replayed in timestamp order.

The first request is always sent at offset 0; the same seed gives the same offsets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from autotune.errors import UserError
from autotune.load.request import Request

__all__ = ["Arrivals", "arrivals"]


@dataclass(frozen=True)
class Arrivals:
    """The arrival process of a benchmark (the same offsets for the same seed in every trial)."""

    rate: float | None = None
    """Requests per second; None sends them all at once (or ``--concurrency`` at a time)."""
    burstiness: float = 1.0
    """Shape of the gamma-distributed gaps: 1 is Poisson, below 1 burstier, above 1 steadier."""
    ramp_up_s: float = 0.0
    """The rate rises linearly from 0 to ``rate`` over this many seconds."""
    trace_speed: float | None = None
    """Replay the requests' own ``timestamp`` gaps, divided by this; None: no trace."""

    def __post_init__(self) -> None:
        _check(self)

    def at_rate(self, rate: float) -> Arrivals:
        """The same shape at another rate (a capacity search); never a trace replay."""
        return replace(self, rate=rate, trace_speed=None)

    @property
    def all_at_once(self) -> bool:
        """No pacing: every request is sent as soon as a concurrency slot is free."""
        return self.rate is None and self.trace_speed is None

    def offsets(self, requests: Sequence[Request], *, seed: int) -> list[float]:
        """Send offsets in seconds from the start, one per request; [] for all at once."""
        if self.trace_speed is not None:
            return _trace(requests, speed=self.trace_speed)
        if self.rate is None:
            return []
        if self.burstiness == 1.0 and self.ramp_up_s == 0.0:
            return arrivals(len(requests), rate=self.rate, seed=seed)
        rng = random.Random(seed)
        shape = self.burstiness
        clock, out = 0.0, []
        for _ in requests:
            out.append(_seconds(clock, rate=self.rate, ramp_up_s=self.ramp_up_s))
            clock += rng.gammavariate(shape, 1.0 / shape)  # unit mean, CV 1/sqrt(shape)
        return out

    def signature(self) -> str:
        """Short text for a workload signature: ``""`` all at once, ``r4``, ``r4-b0.5``,
        ``r4-ramp30``, ``trace-x2``."""
        if self.trace_speed is not None:
            return f"trace-x{self.trace_speed:g}"
        if self.rate is None:
            return ""
        text = f"r{self.rate:g}"
        if self.burstiness != 1.0:
            text += f"-b{self.burstiness:g}"
        if self.ramp_up_s:
            text += f"-ramp{self.ramp_up_s:g}"
        return text

    def describe(self) -> str:
        """One phrase for a log line."""
        if self.trace_speed is not None:
            return f"the trace's timestamps at {self.trace_speed:g}x speed"
        if self.rate is None:
            return "all at once"
        kind = "Poisson" if self.burstiness == 1.0 else f"gamma (burstiness {self.burstiness:g})"
        ramp = f", ramped up over {self.ramp_up_s:g} s" if self.ramp_up_s else ""
        return f"{kind} arrivals at {self.rate:g}/s{ramp}"

    def to_dict(self) -> dict[str, float | None]:
        """Plain values for a YAML profile."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Arrivals:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"arrivals: unknown key(s) {', '.join(unknown)}")
        return cls(
            rate=_optional(d.get("rate"), "rate"),
            burstiness=_number(d.get("burstiness", 1.0), "burstiness"),
            ramp_up_s=_number(d.get("ramp_up_s", 0.0), "ramp_up_s"),
            trace_speed=_optional(d.get("trace_speed"), "trace_speed"),
        )


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


def _seconds(clock: float, *, rate: float, ramp_up_s: float) -> float:
    """The time at which ``clock`` arrivals are expected (the inverse of ``L`` above)."""
    ramp_arrivals = rate * ramp_up_s / 2
    if clock <= ramp_arrivals:
        return math.sqrt(2 * ramp_up_s * clock / rate)
    return ramp_up_s + (clock - ramp_arrivals) / rate


def _trace(requests: Sequence[Request], *, speed: float) -> list[float]:
    stamps = []
    for i, request in enumerate(requests, start=1):
        if request.timestamp is None or not math.isfinite(request.timestamp):
            raise UserError(
                f"--trace: request {i} has no 'timestamp' (every row of a trace needs one)"
            )
        stamps.append(request.timestamp)
    first = min(stamps, default=0.0)
    return [(t - first) / speed for t in stamps]


def _check(a: Arrivals) -> None:
    """One clear line for an arrival process that cannot be run."""
    for name in ("rate", "trace_speed"):
        value = getattr(a, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--request-rate" if name == "rate" else "--trace-speed"
            raise UserError(f"{flag} {value:g}: give a number > 0")
    if not (math.isfinite(a.burstiness) and a.burstiness > 0):
        raise UserError(f"--burstiness {a.burstiness:g}: give a gamma shape > 0 (1 is Poisson)")
    if not (math.isfinite(a.ramp_up_s) and a.ramp_up_s >= 0):
        raise UserError(f"--ramp-up {a.ramp_up_s:g}: give seconds >= 0")
    if a.trace_speed is not None and a.rate is not None:
        raise UserError("--trace replays the trace's own timestamps: drop --request-rate")
    if a.rate is None and (a.burstiness != 1.0 or a.ramp_up_s):
        flag = "--burstiness" if a.burstiness != 1.0 else "--ramp-up"
        raise UserError(f"{flag} shapes arrivals at a rate: give --request-rate too")


def _optional(value: object, name: str) -> float | None:
    return None if value is None else _number(value, name)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"arrivals: {name} must be a number, got {value!r}")
    return float(value)


def signed(workload: str, arrivals: Arrivals | None) -> str:
    """A workload's signature with its arrival pattern (study names, profile keys):
    ``in512-out128`` all at once, ``in512-out128-r4-b0.5`` paced."""
    pace = "" if arrivals is None else arrivals.signature()
    return f"{workload}-{pace}" if pace else workload
