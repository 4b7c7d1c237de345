"""How well any tuner can choose under the scenario family's launch noise, in one run.

    .venv/bin/python benchmarks/selection_limit.py [--studies 500] [--candidates 8]

A study that has launched the optimum and ``--candidates - 1`` other configurations within
``--spread`` below it (each once, measured with ``speed_factor``: the family's noise model) then
spends its re-measure launches exactly as ``autotune tune`` does (``search.finalize``: the
finalists chosen again after every launch, the fewest runs first) and chooses with
``search.ranking`` (median of the runs, the noise band, the tie rule). No search: the optimum
is always among the launched, so every loss printed here is selection alone.

Prints, per noise level, the share of studies whose choice is worth less than 0.95 of the
optimum, for 4 re-measure launches (what a 20-launch study keeps) and more; then, for an
evaluation set of 160 studies with noise drawn as the family draws it (uniform 0-30%), the
expected number of such studies. A script, not a test: its numbers are Monte Carlo estimates.
"""

from __future__ import annotations

import argparse
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from autotune.load.metrics import Metrics
from autotune.search.finalize import Finish, finalists
from autotune.search.goal import Goal
from autotune.search.ranking import candidates, rank
from autotune.testing._fake_model import speed_factor

LINE = 0.95
NOISES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
EXTRAS = (4, 8, 12)


@dataclass
class Launch:
    """One launch as choosing reads it (``ranking.Finished``)."""

    number: int
    args: dict[str, Any]
    measured: float
    params: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=lambda: {"infeasible": -1.0})

    @property
    def values(self) -> list[float]:
        return [self.measured]

    @property
    def user_attrs(self) -> dict[str, Any]:
        zero: dict[str, Any] = {f: 0 for f in Metrics.__dataclass_fields__}
        metrics = Metrics(**(zero | {"output_throughput": self.measured})).to_dict()
        return {
            "launched": True,
            "outcome": "ok",
            "vllm_args": self.args,
            "metrics": metrics,
            "reserved_gib": 20.0,
        }


def study(rng: random.Random, *, noise: float, count: int, spread: float, extra: int) -> float:
    """The true value (share of the optimum) of what one study chooses."""
    truth = [1.0] + [1.0 - rng.uniform(0.0, spread) for _ in range(count - 1)]
    args = [{"max_num_seqs": 8 + i} for i in range(count)]
    launches = [Launch(i, args[i], truth[i] * speed_factor(noise, rng)) for i in range(count)]
    goal, finish = Goal(), Finish()
    by_args = {str(a): t for a, t in zip(args, truth, strict=True)}

    def ranked() -> list[Any]:
        found = candidates(launches, goal=goal, statistic=finish.statistic)
        return rank(found, goal=goal, noise=finish.noise, repeats=finish.settled, most_images=False)

    for _ in range(extra):
        chosen = finalists(ranked(), goal=goal, count=finish.finalists, noise=finish.noise)
        cand = finish.next_run(chosen, sign=1.0)
        if cand is None:
            break
        true = by_args[str(cand.args)]
        launches.append(Launch(len(launches), cand.args, true * speed_factor(noise, rng)))
    return by_args[str(ranked()[0].args)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=500, help="per noise level and plan")
    parser.add_argument("--candidates", type=int, default=8, help="launched configurations")
    parser.add_argument("--spread", type=float, default=0.08, help="how far below the optimum")
    parser.add_argument("--seed", type=int, default=1)
    ns = parser.parse_args()
    print(
        f"{ns.candidates} launched configurations: the optimum and {ns.candidates - 1} within "
        f"{ns.spread:.0%} below it; {ns.studies} studies per cell"
    )
    print("share of studies choosing < 0.95 of the optimum (mean chosen value)")
    print("noise   " + "  ".join(f"{e:>2} re-measures     " for e in EXTRAS))
    for noise in NOISES:
        cells = []
        for extra in EXTRAS:
            rng = random.Random(f"{ns.seed}-{noise}-{extra}")
            got = [
                study(rng, noise=noise, count=ns.candidates, spread=ns.spread, extra=extra)
                for _ in range(ns.studies)
            ]
            share = sum(v < LINE for v in got) / len(got)
            cells.append(f"{share:6.1%} ({statistics.mean(got):.3f})   ")
        print(f"{noise:5.0%}   " + "  ".join(cells))
    print("\nexpected studies < 0.95 among 160 with noise uniform in 0-30% (as the family):")
    for extra in EXTRAS:
        rng = random.Random(f"{ns.seed}-family-{extra}")
        got = [
            study(
                rng,
                noise=rng.uniform(0.0, 0.3),
                count=ns.candidates,
                spread=ns.spread,
                extra=extra,
            )
            for _ in range(ns.studies)
        ]
        share = sum(v < LINE for v in got) / len(got)
        print(f"  {extra:2} re-measures: {160 * share:5.1f} ({share:.1%})")


if __name__ == "__main__":
    main()
