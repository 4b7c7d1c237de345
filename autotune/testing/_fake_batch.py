"""The fake engine's continuous-batching loop: admission, chunked prefill, preemption, crashes,
and the prefix cache (``_fake_prefix``): cached leading blocks of a prompt need no prefill.

Pure threads and arithmetic; the HTTP handler feeds it requests and reads tokens back.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Queue
from typing import Protocol

from autotune.testing._fake_prefix import PrefixCache


@dataclass(eq=False)
class Request:
    """One generation request; the handler reads tokens from ``out``.

    ``out`` receives ``1`` per token, then ``"stop"``/``"length"``, or ``None`` if the engine died.
    """

    prompt: int
    target: int
    max_tokens: int
    out: Queue[int | str | None] = field(default_factory=Queue)
    need: int = 0  # tokens to prefill since the last admission
    filled: int = 0
    decoded: int = 0
    generated: int = 0
    aborted: bool = False
    blocks: tuple[int, ...] | None = None  # the prompt's block hashes; None: prefix caching off
    preempted: bool = False

    @property
    def kv(self) -> int:
        return self.filled + self.decoded


class StepCost(Protocol):
    """Seconds one engine step takes (before the time scale)."""

    def __call__(self, *, batch: int, tokens: int, context: int) -> float: ...


def _default_step(*, batch: int, tokens: int, context: int) -> float:
    return 0.015 + 0.00025 * batch + 0.00001 * tokens


class EngineDead(Exception):
    """The simulated engine has died; no request can be served."""


class BatchEngine:
    """A continuous-batching loop: admission by ``max_num_seqs`` and KV tokens, chunked prefill."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        capacity: int,
        time_scale: float,
        crash_under_load: bool = False,
        crash_after: int | None = None,
        token_limit: int | None = None,
        step: StepCost | None = None,
        on_death: Callable[[str], None] = lambda reason: None,
        block_size: int = 16,
    ) -> None:
        self.max_num_seqs, self.mbt, self.capacity = max_num_seqs, max_num_batched_tokens, capacity
        self.scale, self.crash_under_load, self.crash_after = (
            time_scale,
            crash_under_load,
            crash_after,
        )
        self.on_death = on_death
        self.step = step or _default_step
        self.token_limit = token_limit  # more tokens in the running batch: OOM under load
        self.dead = self._stop = False
        self.waiting: deque[Request] = deque()
        self.running: dict[Request, None] = {}  # admission order; popitem() = newest
        self.counters = {"prompt": 0, "generation": 0, "preemptions": 0, "stop": 0, "length": 0}
        self.counters["abort"] = 0
        self.block_size = block_size  # of the prefix cache's blocks
        self.prefix = PrefixCache()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and fail requests still in flight."""
        with self._cond:
            self._stop = True
            self._fail_all()
            self._cond.notify_all()

    def submit(
        self, prompt: int, target: int, max_tokens: int, *, blocks: tuple[int, ...] | None = None
    ) -> Request:
        """Queue a request; ``blocks``: its prompt's block hashes (None: prefix caching off)."""
        req = Request(prompt, max(1, min(target, max_tokens)), max_tokens, blocks=blocks)
        with self._cond:
            if self.dead or self._stop:
                raise EngineDead
            self.waiting.append(req)
            self._cond.notify_all()
        return req

    def abort(self, req: Request) -> None:
        with self._cond:
            req.aborted = True

    def snapshot(self) -> dict[str, float]:
        with self._cond:
            used = sum(r.kv for r in self.running)
            return {
                "running": len(self.running),
                "waiting": len(self.waiting),
                "kv_usage": used / self.capacity if self.capacity else 0.0,
                "prefix_queries": self.prefix.queries,
                "prefix_hits": self.prefix.hits,
                **self.counters,
            }

    def _fail_all(self) -> None:
        for req in [*self.running, *self.waiting]:
            req.out.put(None)
        self.running.clear()
        self.waiting.clear()

    def _schedule(self) -> tuple[list[Request], list[tuple[Request, int]]]:
        for req in [r for r in (*self.running, *self.waiting) if r.aborted]:
            if req in self.running:
                del self.running[req]
                self._leave(req)
            else:
                self.waiting.remove(req)
            self.counters["abort"] += 1
        used = sum(r.kv for r in self.running)
        planned = used + sum(r.need - r.filled for r in self.running)  # prompts still to prefill
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if planned + req.prompt + req.max_tokens > self.capacity and self.running:
                break
            self.waiting.popleft()
            cached = self._cached(req)
            req.need, req.filled, req.decoded = req.prompt + req.generated, cached, 0
            self.running[req] = None
            planned += req.need
        decode = {r: None for r in self.running if r.filled >= r.need}
        while len(self.running) > 1 and used + len(decode) > self.capacity:
            victim, _ = self.running.popitem()  # preempt the newest; it is recomputed later
            decode.pop(victim, None)
            used -= victim.kv
            victim.preempted = True
            self._leave(victim)
            self.waiting.appendleft(victim)
            self.counters["preemptions"] += 1
        held = sum(max(r.need, r.kv) for r in self.running)
        self.prefix.evict(free_blocks=(self.capacity - held) // self.block_size)
        budget = max(self.mbt - len(decode), 0)
        prefill: list[tuple[Request, int]] = []
        for req in self.running:
            take = min(budget, req.need - req.filled)
            if take > 0:
                prefill.append((req, take))
                budget -= take
        return list(decode), prefill

    def _cached(self, req: Request) -> int:
        """Prompt tokens the prefix cache already holds for an admitted request; pins its blocks."""
        if req.blocks is None:
            return 0
        tokens = req.prompt + req.generated
        count = not req.preempted  # vLLM counts a preempted request's lookups apart
        hit = self.prefix.lookup(req.blocks, tokens=tokens, block_size=self.block_size, count=count)
        self.prefix.acquire(req.blocks)
        return hit

    def _leave(self, req: Request) -> None:
        if req.blocks is not None:
            self.prefix.release(req.blocks)

    def _emit(self, req: Request) -> None:
        req.generated += 1
        self.counters["generation"] += 1
        req.out.put(1)
        if req.generated >= req.target:
            reason = "length" if req.target >= req.max_tokens else "stop"
            del self.running[req]
            self._leave(req)
            self.counters[reason] += 1
            req.out.put(reason)

    def _commit(self, decode: list[Request], prefill: list[tuple[Request, int]]) -> None:
        for req in decode:
            if req in self.running:
                req.decoded += 1
                self._emit(req)
        for req, take in prefill:
            if req in self.running:
                req.filled += take
                if req.filled >= req.need:
                    self.counters["prompt"] += req.prompt
                    self._emit(req)

    def _crash_reason(self) -> str | None:
        if self.crash_under_load and len(self.running) >= 2:
            return "load"
        if self.token_limit is not None and sum(r.kv for r in self.running) > self.token_limit:
            return "memory"
        done = self.counters["stop"] + self.counters["length"]
        if self.crash_after is not None and done >= self.crash_after:
            return "requests"
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self.waiting or self.running):
                    self._cond.wait()
                if self._stop:
                    return
                decode, prefill = self._schedule()
                reason = self._crash_reason()
                self.dead, batch = reason is not None, len(self.running)
            if reason is None:
                tokens = sum(n for _, n in prefill)
                context = sum(r.kv for r in self.running)
                time.sleep(self.step(batch=batch, tokens=tokens, context=context) * self.scale)
                with self._cond:
                    if self._stop:
                        return
                    self._commit(decode, prefill)
                    reason = self._crash_reason()
                    self.dead = reason is not None
            if reason is not None:
                self.on_death(reason)
                with self._cond:
                    self._fail_all()
                return
