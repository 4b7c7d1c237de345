"""From ``TuneOptions`` to what a tune run aims at (``Goal``), how it ends (``Finish``), and the
shape of the load its trials send (concurrency, Poisson rate, warm-up)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autotune.errors import UserError
from autotune.finalize import Finish
from autotune.goals import SLO_METRICS, Goal, goal_from
from autotune.hardware import Hardware
from autotune.opt_in import FP8_WARNING, output_warnings
from autotune.prepare import TuneOptions
from autotune.workload import Workload, build_requests

WARMUP_SEED_OFFSET = 1000  # warm-up prompts differ from the measured ones (no cache hits)


def goal_for(options: TuneOptions, hardware: Hardware) -> Goal:
    """The objective and limits (checked already by ``prepare``)."""
    return goal_from(
        objective=options.objective,
        slos=options.slos,
        min_throughput=options.min_throughput,
        memory_budget=options.memory_budget,
        total_gib=hardware.memory_gib,
    )


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
    """``TrialRunner`` fields: concurrency or Poisson rate, warm-up requests, SLOs for goodput."""
    if options.concurrency is not None and options.concurrency < 1:
        raise UserError(f"--concurrency {options.concurrency}: at least 1")
    if options.request_rate is not None and not options.request_rate > 0:
        raise UserError(f"--request-rate {options.request_rate}: give requests per second > 0")
    warmup = []
    if options.warmup > 0:
        wl = replace(workload, seed=workload.seed + WARMUP_SEED_OFFSET)
        warmup = build_requests(wl, num_prompts=options.warmup, vocab_size=vocab_size)
    return {
        "max_concurrency": options.concurrency,
        "request_rate": options.request_rate,
        "warmup": tuple(warmup),
        "slos": {SLO_METRICS[name]: limit for name, limit in goal.slos},
    }


def warnings_for(
    extra_args: Sequence[str], *, vllm_args: Iterable[Mapping[str, Any]] = ()
) -> list[str]:
    """Settings that change outputs, said in the profile: given after ``--`` or tuned
    (``vllm_args``: the winner's and its variants')."""
    text = shlex.join(extra_args)
    if "--kv-cache-dtype" in text and "fp8" in text:
        return [FP8_WARNING]
    return output_warnings(vllm_args)
