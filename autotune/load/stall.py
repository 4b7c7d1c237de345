"""Stall detection for a benchmark: an engine that stops streaming (stopped, wedged, deadlocked)
is noticed in seconds instead of at the benchmark's timeout.

Every streamed line and every finished request is a pulse. The engine hangs when no pulse came
for longer than the limit: ``--stall-timeout`` when given, else derived from the run itself —
before the first pulse, a floor plus the first wave's prompt tokens at a slow prefill rate; after
it, a multiple of the longest silence this engine has already shown (its measured speed), never
below the floor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from autotune.load.request import Request

STALLED = "stalled"  # the prefix of the abort reason
FLOOR_S = 30.0  # the shortest automatic limit
FACTOR = 20.0  # the automatic limit: this many times the longest silence seen so far
SLOW_PREFILL_TOK_S = 500.0  # prompt tokens per second a slow engine still prefills
_CHARS_PER_TOKEN = 4  # for text prompts and chat messages (no tokenizer here)


def first_wave_s(requests: Sequence[Request], *, concurrency: int | None) -> float:
    """The automatic limit before the first pulse: the floor plus the prompt tokens of the
    requests sent at once, at a slow prefill rate."""
    wave = requests[: concurrency or len(requests)]
    tokens = sum(_prompt_tokens(r) for r in wave)
    return FLOOR_S + tokens / SLOW_PREFILL_TOK_S


def _prompt_tokens(request: Request) -> int:
    if isinstance(request.prompt, list):
        return len(request.prompt)
    text = request.prompt if request.prompt is not None else str(request.messages)
    return len(text) // _CHARS_PER_TOKEN


class StallWatch:
    """Pulses from the benchmark; ``check`` says when the silence is longer than the limit."""

    def __init__(self, *, fixed_s: float | None, first_pulse_s: float) -> None:
        self.fixed_s = fixed_s
        self.first_pulse_s = first_pulse_s
        self.last = time.monotonic()
        self.longest = 0.0
        self.pulsed = False

    def pulse(self) -> None:
        now = time.monotonic()
        if self.pulsed:
            self.longest = max(self.longest, now - self.last)
        self.pulsed = True
        self.last = now

    def limit_s(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        if not self.pulsed:
            return self.first_pulse_s
        return max(FLOOR_S, FACTOR * self.longest)

    def check(self) -> str | None:
        """The abort reason once the engine has been silent for longer than the limit."""
        silent = time.monotonic() - self.last
        limit = self.limit_s()
        if silent <= limit:
            return None
        return f"{STALLED}: no token for {silent:.0f} s (stall timeout {limit:.0f} s)"
