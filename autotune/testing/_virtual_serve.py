"""The fake engine's ``BatchEngine`` loop on a virtual clock instead of ``time.sleep``, with
requests fed as the scheduler can take them (the same schedule, no waiting)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from queue import Queue
from unittest import mock

from autotune.testing import _fake_batch
from autotune.testing._fake_batch import BatchEngine, StepCost

Job = tuple[int, int, int]  # (prompt tokens, tokens to generate, max_tokens) as the engine gets it


class _Drained(Exception):
    """The engine loop went idle: every request is done."""


class _NoWait(threading.Condition):
    """The engine's condition variable; going idle ends the run instead of blocking."""

    def wait(self, timeout: float | None = None) -> bool:
        raise _Drained


class _Clock:
    """Stands in for the ``time`` module of ``_fake_batch``: a step's sleep advances the clock,
    and lets the caller submit more requests before the next step is scheduled."""

    def __init__(self, between_steps: Callable[[], None]) -> None:
        self.now = 0.0
        self._between_steps = between_steps

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self._between_steps()


class _Tokens(Queue[int | str | None]):
    """A request's output queue that keeps the virtual time of each token and the final item."""

    def __init__(self, clock: _Clock) -> None:  # no Queue.__init__: nothing waits on it
        self.clock = clock
        self.times: list[float] = []
        self.end: str | None = None

    def put(self, item: int | str | None, block: bool = True, timeout: float | None = None) -> None:
        if isinstance(item, int):
            self.times.append(self.clock.now)
        else:
            self.end = item  # "stop" / "length", or None: the engine died


@dataclass(frozen=True)
class Served:
    """What the engine did with the jobs, on the virtual clock (seconds from the first send)."""

    token_times: tuple[tuple[float, ...], ...]  # per job, the time each token was emitted
    finished: tuple[bool, ...]  # per job: got its finish reason (False: the engine died first)
    crashed: str | None  # the BatchEngine's death reason ("load", "requests"), if it died
    preemptions: int = 0
    peak_kv_tokens: int = 0  # the KV cache at its fullest
    peak_running: int = 0
    peak_waiting: int = 0  # requests sent and not yet running (all are sent at time 0)


_SIM_LOCK = threading.Lock()  # the clock replaces a module global of _fake_batch


def serve_jobs(
    jobs: Sequence[Job],
    *,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    capacity: int,
    time_scale: float,
    crash_under_load: bool = False,
    crash_after: int | None = None,
    token_limit: int | None = None,
    step: StepCost | None = None,
    lazy: bool = True,
) -> Served:
    """Run the fake's scheduling loop over ``jobs``, all sent at once at time 0.

    ``lazy``: requests enter the engine's waiting queue as the loop can take them (never fewer
    waiting than ``max_num_seqs``). Admission only ever looks at the head of the queue, so the
    schedule is the one of submitting everything first (``lazy=False``), without the engine's
    per-step scan of thousands of waiting requests.
    """
    death: list[str] = []
    engine = BatchEngine(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        capacity=capacity,
        time_scale=time_scale,
        crash_under_load=crash_under_load,
        crash_after=crash_after,
        token_limit=token_limit,
        step=step,
        on_death=death.append,
    )
    engine._cond = _NoWait()
    pending: Iterator[Job] = iter(jobs)
    outs: list[_Tokens] = []

    peaks = [0, 0, 0]  # KV tokens, running, waiting

    def feed() -> None:
        running = len(engine.running)
        kv = sum(r.kv for r in engine.running)
        finished = engine.counters["stop"] + engine.counters["length"]
        waiting = len(jobs) - finished - running
        peaks[:] = max(peaks[0], kv), max(peaks[1], running), max(peaks[2], waiting)
        while (not lazy or len(engine.waiting) <= max_num_seqs) and not (engine.dead or death):
            job = next(pending, None)
            if job is None:
                return
            req = engine.submit(*job)
            req.out = out = _Tokens(clock)
            outs.append(out)

    clock = _Clock(feed)
    with _SIM_LOCK, mock.patch.object(_fake_batch, "time", clock):
        feed()
        if outs:
            with contextlib.suppress(_Drained):
                engine._loop()
    times = [tuple(o.times) for o in outs]
    done = [o.end in ("stop", "length") for o in outs]
    missing = len(jobs) - len(outs)  # never submitted: the engine had died
    return Served(
        token_times=(*times, *([()] * missing)),
        finished=(*done, *([False] * missing)),
        crashed=death[0] if death else None,
        preemptions=engine.counters["preemptions"],
        peak_kv_tokens=peaks[0],
        peak_running=peaks[1],
        peak_waiting=peaks[2],
    )
