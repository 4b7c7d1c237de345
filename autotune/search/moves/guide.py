"""The study's own moves next to the sampler's (see ``autotune.search.moves.edge``): before the
sampler is asked, enqueue a climb to the best configuration's memory edge or a local move around
it; after it proposes, lift its memory setting to what a configuration needing at least as much
has served at. Only for objectives that more memory never hurts (throughput, goodput).

The lifted candidate is what runs (``vllm_args``, and ``params`` in the trial's user
attributes); Optuna keeps the sampler's own proposal as the trial's parameters, so the sampler
sees a fixed function of its inputs."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM
from autotune.engine.outcome import Outcome
from autotune.search.moves import (
    ceiling,
    edge,
    fewer_waves,
    kv_fit,
    local,
    overfill,
    recheck,
    rescue,
    retreat,
    shrink,
)
from autotune.search.moves.alike import memory_unused
from autotune.search.moves.load_shape import Load
from autotune.search.moves.seen import tried
from autotune.search.space import SearchSpace
from autotune.trial.record import attrs

CLIMBING = ("throughput", "goodput")
LOCAL_SHARE = 0.5  # once the edge is known, this share of the asks is a local move


class Guide:
    """Climb, local moves and lift for one study (one per worker; no state in the storage)."""

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None,
        expected: Callable[[Mapping[str, object]], float | None] | None = None,
        load: Load | None = None,
        kv_tokens: Callable[[Mapping[str, object]], int | None] | None = None,
        check: Callable[[Mapping[str, object]], str | None] | None = None,
    ) -> None:
        self.space, self.expected, self.load = space, expected, load
        self.kv_tokens, self.check = kv_tokens, check
        self.rng = random.Random(seed)
        dim = edge.memory_dim(space)
        self._memory = dim.name if dim is not None else None

    def before_ask(self, study: optuna.Study) -> None:
        """Enqueue the next climb or local move, unless a candidate is already waiting."""
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        if (again := recheck.contradiction(study, space=self.space)) is not None:
            study.enqueue_trial(again.params, user_attrs=again.marks)
            return
        seen = tried(study, memory=self._memory)
        expected = self.expected
        guess = None if expected is None else (lambda p: expected(self.space.args(p)))
        check = self.check
        fails = None if check is None else (lambda p: check(self.space.args(p)))
        climb: Callable[[], edge.Climb | None] = partial(
            edge.next_climb, space=self.space, tried=seen, expected=guess, running=self._running
        )
        best = self._best(seen)
        if best is not None and memory_unused(seen, memory=str(self._memory), of=best):
            climb = _nothing  # the best ran alike at two memory settings
        fill = partial(self._sized, kv_fit.fill, seen, guess)
        # vLLM reported the best's KV cache idle: larger batches first, more memory after them
        idle = best is not None and best.kv_pressure() == "idle"
        prefill = partial(self._prefill, seen, guess)
        first = prefill if self._chunks_first(seen) else None
        move = None
        for propose in (
            partial(retreat.retreat, space=self.space, tried=seen, expected=guess),
            partial(self._aim, seen, guess),
            first or _nothing,
            fill if idle else climb,
            partial(kv_fit.repair, space=self.space, tried=seen, expected=guess),
            partial(rescue.rescue, space=self.space, tried=seen, expected=guess, fails=fails),
            partial(self._sized, rescue.starve, seen, guess),
            climb if idle else fill,
            partial(self._sized, fewer_waves.fewer_waves, seen, guess),
            partial(overfill.overfill, space=self.space, tried=seen, load=self.load, expected=guess)
            if self.load is not None
            else _nothing,
            partial(rescue.restore, space=self.space, tried=seen, expected=guess),
            partial(self._sized, shrink.shrink, seen, guess),
            prefill,
        ):
            if (move := propose()) is not None:
                break
        if move is None and self.rng.random() < LOCAL_SHARE:
            move = local.local_move(space=self.space, tried=seen, rng=self.rng, expected=guess)
        if move is not None:
            params = self._images(move.params)
            study.enqueue_trial(params, user_attrs=attrs(source=move.why), skip_if_exists=True)

    def _sized(
        self,
        move: Callable[..., edge.Climb | None],
        seen: Sequence[edge.Tried],
        guess: Callable[[Mapping[str, Value]], float | None] | None,
    ) -> edge.Climb | None:
        """A move that sizes batches to the benchmark's requests (``kv_fit.fill``,
        ``shrink.shrink``)."""
        if self.load is None:
            return None
        return move(
            space=self.space,
            tried=seen,
            request_tokens=self.load.request_tokens,
            most=self.load.in_flight,
            expected=guess,
            capacity=self._capacity,
        )

    def _aim(
        self,
        seen: Sequence[edge.Tried],
        guess: Callable[[Mapping[str, Value]], float | None] | None,
    ) -> edge.Climb | None:
        if self.load is None:
            return None
        tokens, most = self.load.request_tokens, self.load.in_flight
        return ceiling.aim(
            space=self.space,
            tried=seen,
            ceiling=ceiling.learn(space=self.space, tried=seen, request_tokens=tokens, most=most),
            request_tokens=tokens,
            most=most,
            capacity=self._capacity,
            expected=guess,
        )

    def _prefill(
        self,
        seen: Sequence[edge.Tried],
        guess: Callable[[Mapping[str, Value]], float | None] | None,
    ) -> edge.Climb | None:
        if self.load is None:
            return None
        return kv_fit.prefill(
            space=self.space,
            tried=seen,
            prompt_tokens=self.load.prompt_tokens,
            request_tokens=self.load.request_tokens,
            most=self.load.in_flight,
            expected=guess,
            capacity=self._capacity,
        )

    def _best(self, seen: Sequence[edge.Tried]) -> edge.Tried | None:
        ok = [t for t in seen if t.outcome == Outcome.OK.value and t.value is not None]
        return edge.best_of(ok, memory=self._memory) if ok and self._memory else None

    def _chunks_first(self, seen: Sequence[edge.Tried]) -> bool:
        if self.load is None:
            return False
        return kv_fit.chunks_bind(
            space=self.space, tried=seen, prompt_tokens=self.load.prompt_tokens
        )

    def _running(self, params: Mapping[str, Value]) -> int | None:
        """The most tokens ``params`` can hold running: the KV cache the memory model predicts,
        or, if fewer, its sequences (at most the requests in flight) at the mean request's
        length."""
        kv = self._capacity(params)
        if kv is None or self.load is None:
            return None
        seqs = self.space.args(params).get("max_num_seqs")
        if not isinstance(seqs, int):
            return kv
        return min(kv, min(seqs, self.load.in_flight) * self.load.request_tokens)

    def _capacity(self, params: Mapping[str, Value]) -> int | None:
        return None if self.kv_tokens is None else self.kv_tokens(self.space.args(params))

    def crashes(self, study: optuna.Study, params: Mapping[str, Value]) -> str | None:
        """Why ``params`` would crash under load like a launch of the study did, or None."""
        return retreat.crashes_again(
            space=self.space, tried=tried(study), params=params, running=self._running
        )

    def lift(self, study: optuna.Study, params: Mapping[str, Value]) -> dict[str, Value]:
        return edge.lift(space=self.space, tried=tried(study), params=self._images(params))

    def _images(self, params: Mapping[str, Value]) -> dict[str, Value]:
        """The image limit at the most images a benchmark request carries (within its range):
        a higher limit sizes the encoder's profiling run for images no request sends, memory
        the KV cache then lacks; a lower one rejects requests."""
        out = dict(params)
        most = self.load.images if self.load is not None else 0
        if most > 0 and IMAGE_DIM in out and IMAGE_DIM in self.space:
            out[IMAGE_DIM] = self.space[IMAGE_DIM].clamp(most)
        return out


def _nothing() -> edge.Climb | None:
    return None


class Guesses(Protocol):
    """What the guide asks of the study's memory knowledge (``search.screen.MemoryScreen``):
    guesses that aim its moves, never reasons to reject a candidate."""

    def memory_edge(self, args: Mapping[str, Any]) -> float | None: ...

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None: ...

    def check(self, args: Mapping[str, Any]) -> str | None: ...


def for_goal(
    *,
    kind: str,
    space: SearchSpace,
    seed: int | None,
    knowledge: Guesses | None,
    load: Load | None = None,
) -> Guide | None:
    """The guide of a study with this objective (None: the sampler alone)."""
    if kind not in CLIMBING:
        return None
    expected = knowledge.memory_edge if knowledge is not None else None
    kv_tokens = knowledge.predict_kv_tokens if knowledge is not None else None
    check = knowledge.check if knowledge is not None else None
    return Guide(
        space=space, seed=seed, expected=expected, load=load, kv_tokens=kv_tokens, check=check
    )
