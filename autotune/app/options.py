"""``TuneOptions``: everything ``autotune tune`` (and ``serve`` on a miss) is given, as the
library's one input record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autotune.hardware import Device
from autotune.load.workload import Workload
from autotune.search.goal import Goal, Objective, Statistic, goal_from


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
    warmup: int = 0  # --warmup: requests sent first, not measured
    repeats: int = 3  # --repeats: measurements of each finalist
    finalists: int = 2  # --finalists: candidates re-measured
    statistic: Statistic = "median"  # --statistic: of the repeats
    soak: bool = True  # --no-soak skips the worst-case load run of the winner
    prune: bool = True  # --no-prune: never stop a benchmark early
    patience: int = 0  # --patience K: stop after K launches without improvement
    min_improvement: float = 0.01  # --min-improvement: what counts as an improvement
    gpus: str | None = None  # --gpus 0,1,2,3 | all: one worker per GPU (group)
    tune: tuple[str, ...] = ()  # --tune NAME: opt-in dimensions (``autotune.search.opt_in``)

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
