"""A running benchmark's backlog at one moment: what a caller needs to stop a run whose queue
grows without bound (``client.run_benchmark(watch=...)``; ``load.saturation`` judges it)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LoadState", "due_by"]


@dataclass(frozen=True)
class LoadState:
    """Counts since the start of a run, as polled about every 0.2 s."""

    elapsed_s: float
    """Seconds since the run started (the origin of the send offsets)."""
    total: int
    """Requests in the run."""
    due: int
    """Requests whose send offset has passed (all of them when sent all at once)."""
    sent: int
    """Requests that went out (a concurrency slot was free)."""
    finished: int
    """Requests answered or failed."""

    @property
    def backlog(self) -> int:
        """Requests due but not finished: waiting for a slot or in the server."""
        return self.due - self.finished

    @property
    def waiting(self) -> int:
        """Requests due but not yet sent (``--concurrency`` holds them on the client)."""
        return self.due - self.sent

    @property
    def in_flight(self) -> int:
        """Requests sent and not finished."""
        return self.sent - self.finished


def due_by(offsets: Sequence[float], elapsed_s: float, *, total: int) -> int:
    """How many requests are due ``elapsed_s`` after the start; ``offsets`` sorted ascending,
    empty for all at once (every request due at once)."""
    if not offsets:
        return total
    return bisect.bisect_right(offsets, elapsed_s)
