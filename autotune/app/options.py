"""``TuneOptions``: everything ``autotune tune`` (and ``serve`` on a miss) is given, as the
library's one input record."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from autotune.engine.safety import check_user_args
from autotune.errors import UserError
from autotune.hardware import Device
from autotune.load.arrivals import Arrivals, signed
from autotune.load.trace import trace_workload
from autotune.load.workload import Workload
from autotune.search.goal import Goal, Objective, Statistic, goal_from

# The documented range of each numeric option (the CLI's types show it in --help; ``check`` holds
# library callers to it): finite, and small enough that a typo cannot run for ever.
LIMITS: dict[str, tuple[float, float]] = {
    "trials": (1, 10_000),
    "timeout_s": (0, 31_536_000),  # a year
    "seed": (0, 2**32 - 1),  # what Optuna's samplers (numpy) accept
    "startup_timeout_s": (1, 86_400),
    "stall_timeout_s": (1, 86_400),
    "noise": (0, 1),
    "min_model_len": (16, 1 << 24),  # vLLM's max_model_len limit
    "min_images": (0, 999),  # vLLM's image limit per prompt
    "min_throughput": (0, 1e9),
    "concurrency": (1, 1_000_000),
    "request_rate": (0, 1e6),
    "burstiness": (0, 1000),  # arrivals (``load.arrivals``)
    "ramp_up_s": (0, 86_400),
    "trace_speed": (0, 10_000),
    "warmup": (0, 100_000),
    "repeats": (1, 100),
    "finalists": (1, 100),
    "patience": (0, 10_000),
    "min_improvement": (0, 1),
    "input_len": (1, 1 << 20),  # workload
    "output_len": (1, 1 << 20),
    "num_prompts": (1, 100_000),
    "shared_prefix_len": (0, 1 << 20),
    "prefix_groups": (1, 10_000),
}
# A Hugging Face id: ORG/NAME or NAME, letters, digits, '-', '_', '.', at most 96 each.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(?:/[A-Za-z0-9][\w.-]{0,95})?", re.ASCII)


def check_model_id(model: str) -> str:
    """MODEL as given, or one clear line: not empty, printable, a length a file system holds,
    and an existing path or a Hugging Face id."""
    shown = repr(model if len(model) <= 60 else model[:60] + "...")
    if not model.strip() or not model.isprintable():
        raise UserError(f"model {shown}: expected a model directory or a Hugging Face id")
    if len(model.encode()) > 4096 or any(len(p.encode()) > 255 for p in model.split("/")):
        raise UserError(f"model {shown}: too long for a path (a name over 255 bytes)")
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or _HUB_ID.fullmatch(model):
        return model  # a path (resolving it says whether it exists) or a hub id
    try:
        exists = Path(os.path.expanduser(model)).exists()
    except (OSError, ValueError):
        exists = False
    if not exists:
        raise UserError(
            f"model {shown} is no directory here and no Hugging Face id (ORG/NAME: letters, "
            "digits, '-', '_' and '.', at most 96 each)"
        )
    return model


@dataclass(frozen=True)
class TuneOptions:
    """Everything ``autotune tune`` (and ``serve`` on a miss) is given."""

    model: str
    gpu: str | None = None
    device: Device = "auto"
    ranges: Mapping[str, str | None] = field(default_factory=dict)
    min_model_len: int | None = None
    workload: Workload = field(default_factory=Workload)
    trials: int = 20
    timeout_s: float | None = None
    seed: int | None = 0
    storage: str | None = None
    state_dir: Path | None = None
    profiles_dir: Path | None = None
    vllm_cmd: str | None = None
    extra_args: tuple[str, ...] = ()
    enqueue: tuple[str, ...] = ()  # "name=value,name=value" candidates to try first
    startup_timeout_s: float = 900.0
    stall_timeout_s: float | None = None  # --stall-timeout; None: derived (``load.stall``)
    noise: float = 0.05
    quiet: bool = False
    objective: Objective = "throughput"
    min_images: int | None = None  # the profile must accept at least this many images
    images_max: bool = False  # --images max: find the largest image count that fits
    image_size_hint: tuple[int, int] | None = None  # --image-size: the resolution sent
    prescreen: bool = True  # --no-prescreen: launch every candidate (predictions still kept)
    guide: bool = True  # --no-guide: the sampler alone (no edge climb, local moves, lift)
    slos: tuple[str, ...] = ()  # --slo NAME=MS
    min_throughput: float | None = None  # --min-throughput (output tok/s)
    memory_budget: str | None = None  # --memory-budget FRACTION or GiB
    concurrency: int | None = None  # --concurrency: requests in flight at most
    request_rate: float | None = None  # --request-rate: Poisson arrivals per second
    burstiness: float = 1.0  # --burstiness: gamma shape of the gaps (1: Poisson)
    ramp_up_s: float = 0.0  # --ramp-up: seconds for the rate to rise from 0 to --request-rate
    trace: Path | None = None  # --trace: a JSONL dataset sent at its rows' timestamps
    trace_speed: float = 1.0  # --trace-speed: the trace's gaps divided by this
    warmup: int = 0  # --warmup: requests sent first, not measured
    repeats: int = 3  # --repeats: most measurements of a finalist
    finalists: int = 4  # --finalists: candidates re-measured
    statistic: Statistic = "median"  # --statistic: of the repeats
    soak: bool = True  # --no-soak skips the worst-case load run of the winner
    prune: bool = True  # --no-prune: never stop a benchmark early
    patience: int = 0  # --patience K: stop after K launches without improvement
    min_improvement: float = 0.01  # --min-improvement: what counts as an improvement
    gpus: str | None = None  # --gpus 0,1,2,3 | all: one worker per GPU (group)
    tune: tuple[str, ...] = ()  # --tune NAME: opt-in dimensions (``autotune.search.opt_in``)

    def check(self) -> TuneOptions:
        """These options with the arguments after ``--`` spelt out, or one clear line for a
        model id, number (``LIMITS``) or argument that must not reach an engine."""
        check_model_id(self.model)
        wl = self.workload
        numbers = {name: getattr(self, name, None) for name in LIMITS}
        numbers.update(input_len=wl.input_len, output_len=wl.output_len, num_prompts=wl.num_prompts)
        numbers.update(shared_prefix_len=wl.shared_prefix_len, prefix_groups=wl.prefix_groups)
        for name, value in numbers.items():
            if value is None:
                continue
            low, high = LIMITS[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and low <= value <= high)
            ):
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                span = "..".join(str(int(x) if x == int(x) else x) for x in (low, high))
                raise UserError(f"{flag} {value!r}: expected a number {span}")
        self.arrivals()  # one line for a bad arrival pattern, before anything starts
        traced = wl if self.trace is None else trace_workload(wl, self.trace)
        return replace(self, workload=traced, extra_args=tuple(check_user_args(self.extra_args)))

    def arrivals(self) -> Arrivals | None:
        """When the benchmark's requests are sent (None: all at once), or one clear line."""
        if self.trace is None:
            if self.trace_speed != 1.0:
                raise UserError("--trace-speed scales a --trace: give --trace FILE too")
            if self.request_rate is None and self.burstiness == 1.0 and not self.ramp_up_s:
                return None
            return Arrivals(
                rate=self.request_rate, burstiness=self.burstiness, ramp_up_s=self.ramp_up_s
            )
        if self.burstiness != 1.0 or self.ramp_up_s:
            raise UserError("--trace sends at the trace's timestamps: drop --burstiness/--ramp-up")
        return Arrivals(rate=self.request_rate, trace_speed=self.trace_speed)

    def signature(self, workload: Workload | None = None) -> str:
        """The signature of the traffic tuned for (study names, profile keys): the workload's
        (``workload``, else these options') and its arrival pattern."""
        return signed((workload or self.workload).signature(), self.arrivals())

    def goal(self, *, total_gib: float) -> Goal:
        """What "best" means for these options on a GPU of ``total_gib`` (one clear line for a
        bad combination): the one place the goal is built."""
        return goal_from(
            objective=self.objective,
            slos=self.slos,
            min_throughput=self.min_throughput,
            memory_budget=self.memory_budget,
            total_gib=total_gib,
        )
