"""The study's own moves next to the sampler's (see ``autotune.edge``): before the sampler is
asked, enqueue a climb to the best configuration's memory edge or a local move around it; after
it proposes, lift its memory setting to what a configuration needing at least as much has served
at. Only for objectives that more memory never hurts (throughput, goodput).

The lifted candidate is what runs (``vllm_args``, and ``params`` in the trial's user
attributes); Optuna keeps the sampler's own proposal as the trial's parameters, so the sampler
sees a fixed function of its inputs."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import optuna
from optuna.trial import TrialState

from autotune import edge
from autotune.outcome import Outcome
from autotune.ranges import Value
from autotune.space import SearchSpace

CLIMBING = ("throughput", "goodput")
LOCAL_SHARE = 0.5  # once the edge is known, this share of the asks is a local move
PARAMS = "params"  # user attribute: the parameters that ran (after the lift)


def tried(study: optuna.Study) -> list[edge.Tried]:
    """Finished trials as the climb sees them (pre-screened ones as the class they would hit)."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = t.user_attrs
        outcome = str(attrs.get("outcome", ""))
        if outcome == Outcome.SKIPPED.value:
            outcome = str(attrs.get("reason", "")).split(":")[0].removeprefix("predicted ")
        elif outcome == Outcome.OK.value and any(v > 0 for v in t.constraints.values()):
            outcome = "missed constraints"
        value = t.values[0] if t.values else None
        est = attrs.get("estimated_max_model_len")
        params = attrs.get(PARAMS) or t.params
        out.append(edge.Tried(params, outcome, value, int(est) if est else None))
    return out


class Guide:
    """Climb, local moves and lift for one study (one per worker; no state in the storage)."""

    def __init__(
        self,
        *,
        space: SearchSpace,
        seed: int | None,
        expected: Callable[[Mapping[str, object]], float | None] | None = None,
    ) -> None:
        self.space, self.expected = space, expected
        self.rng = random.Random(seed)

    def before_ask(self, study: optuna.Study) -> None:
        """Enqueue the next climb or local move, unless a candidate is already waiting."""
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        seen = tried(study)
        expected = self.expected
        guess = None if expected is None else (lambda p: expected(self.space.args(p)))
        move = edge.next_climb(space=self.space, tried=seen, expected=guess)
        if move is None:
            move = edge.repair(space=self.space, tried=seen)
        if move is None and self.rng.random() < LOCAL_SHARE:
            move = edge.local_move(space=self.space, tried=seen, rng=self.rng)
        if move is not None:
            study.enqueue_trial(move.params, user_attrs={"source": move.why}, skip_if_exists=True)

    def lift(self, study: optuna.Study, params: Mapping[str, Value]) -> dict[str, Value]:
        return edge.lift(space=self.space, tried=tried(study), params=params)


def for_goal(
    *, kind: str, space: SearchSpace, seed: int | None, knowledge: object | None
) -> Guide | None:
    """The guide of a study with this objective (None: the sampler alone)."""
    if kind not in CLIMBING:
        return None
    expected = getattr(knowledge, "memory_edge", None)
    return Guide(space=space, seed=seed, expected=expected)
