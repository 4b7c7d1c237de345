"""From ``TuneOptions`` to how a tune run ends (``Finish``) and the shape of the load its trials
send (concurrency, arrivals, warm-up); the goal is ``TuneOptions.goal``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autotune.app.options import TuneOptions
from autotune.errors import UserError
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.search.finalize import Finish
from autotune.search.goal import SLO_METRICS, Goal
from autotune.trial.rate_search import CapacitySearch

WARMUP_SEED_OFFSET = 1000  # warm-up prompts differ from the measured ones (no cache hits)
CAPACITY_SEED_OFFSET = 2000  # each capacity step's prompts differ from every other's


def finish_for(options: TuneOptions) -> Finish:
    if options.repeats < 1 or options.finalists < 1:
        raise UserError("--repeats and --finalists must be at least 1")
    return Finish(
        repeats=options.repeats,
        finalists=options.finalists,
        statistic=options.statistic,
        soak=options.soak,
        noise=options.noise,
        most_images=options.images_max,
    )


def load_shape(
    options: TuneOptions, goal: Goal, workload: Workload, *, vocab_size: int | None
) -> dict[str, Any]:
    """``TrialRunner`` fields: concurrency, arrivals (a rate, bursts, a ramp-up or a trace's
    timestamps; ``TuneOptions.arrivals``), warm-up requests, SLOs for goodput."""
    if options.concurrency is not None and options.concurrency < 1:
        raise UserError(f"--concurrency {options.concurrency}: at least 1")
    arrivals = options.arrivals()
    warmup = []
    if options.warmup > 0:
        wl = replace(workload, seed=workload.seed + WARMUP_SEED_OFFSET)
        warmup = build_requests(wl, num_prompts=options.warmup, vocab_size=vocab_size)
    return {
        "max_concurrency": options.concurrency,
        "arrivals": arrivals,
        "warmup": tuple(warmup),
        "slos": {SLO_METRICS[name]: limit for name, limit in goal.slos},
        "capacity": capacity_search(goal, workload, vocab_size=vocab_size),
    }


def capacity_search(
    goal: Goal, workload: Workload, *, vocab_size: int | None
) -> CapacitySearch | None:
    """``--objective capacity``: the rate search, each step with prompts of its own seed."""
    if goal.kind != "capacity":
        return None

    def requests_for(step: int, count: int) -> list[Request]:
        wl = replace(workload, seed=workload.seed + CAPACITY_SEED_OFFSET + step)
        return build_requests(wl, num_prompts=count, vocab_size=vocab_size)

    return CapacitySearch(
        slos={SLO_METRICS[name]: limit for name, limit in goal.slos},
        requests_for=requests_for,
        num_prompts=workload.num_prompts,
    )
