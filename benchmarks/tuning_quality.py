"""How close the tuner gets to the true optimum, on fake-engine landscapes of different shapes.

    .venv/bin/python benchmarks/tuning_quality.py [--seeds 5] [--budgets 10,20,40]
        [--landscapes a,b,...] [--sampler default|tpe:...|...] [--verify a,e] [--jobs N]

A landscape is the fake engine's model and GPU (config.json + ``AUTOTUNE_FAKE_*`` knobs), a
workload and autotune's search space for them (from ``prepare``, as ``autotune tune`` builds it).
The value of a configuration is what the fake engine would do with it, computed in-process by
``autotune.testing.landscape.FakeTruth`` from the fake's own memory model (``plan_boot``) and
scheduler (``BatchEngine`` on a virtual clock): it boots or fails with the class autotune's
classifier gives the fake's log, and if it serves, its output throughput for the study's
requests. The landscape's optimum is the best value over a fine grid (every utilization step,
16 log-spaced values of the batch sizes, 4 lengths, the lowest image limits), refined by a local
integer search from the best grid points (cached under the temp directory; ``--no-cache``).

For every landscape, seed and budget (engine launches) the script runs:

- autotune: ``study.open_study`` + ``StudyPlan`` + ``run_study`` with its ``FailureRules``, built as
  ``api.tune`` builds them, with a ``LandscapeRunner`` in place of real launches;
- grid: a coarse grid over the same dimensions (evenly spaced in each dimension's own scale,
  the fewest levels that give at least the budget), visited in a random order and cut at the
  budget, like Optuna's GridSampler;
- random: uniform draws (log-uniform on log dimensions) through ``SearchSpace.sample``.

It prints, per budget, landscape x method: the median (worst) over seeds of the best throughput
found / the landscape's optimum, and the share of launches that failed at startup (a runtime
crash or refused requests are not counted there); then the issue's criteria at 20 launches.

``--sampler`` swaps the sampler of autotune's study (``default`` keeps the one
``study.open_study`` makes) to compare samplers on the same landscapes; ``--no-baselines`` skips
grid and random. ``--prescreen`` picks autotune's pre-screen: ``memory`` (what ``api.tune`` uses),
``classes`` (failure-class rules alone), ``none``, or ``oracle`` (a perfect startup-failure
screen on top: the headroom of memory-model work). ``--verify KEYS`` first launches the real
fake engine through ``TrialRunner`` on five configurations per landscape and compares outcome,
KV cache and throughput with the in-process values.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna

from autotune.app.options import TuneOptions
from autotune.app.prepare import Prepared, prepare
from autotune.app.settings import finish_for
from autotune.engine.defaults import Value, vllm_defaults
from autotune.engine.outcome import Outcome
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.search import best, finalize
from autotune.search import study as st
from autotune.search.goal import Goal
from autotune.search.moves.guide import Guesses, for_goal
from autotune.search.moves.load_shape import Load
from autotune.search.screen_rules import ClassScreen
from autotune.search.space import UTIL_STEP, Dim, SearchSpace
from autotune.testing._fake_model import speed_factor
from autotune.testing.landscape import FakeTruth
from autotune.testing.landscape_runner import LandscapeRunner
from autotune.testing.scenarios import SPLIT_SEED, split
from autotune.testing.scenarios import Scenario as Landscape
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult, TrialRunner

ROOT = Path(__file__).resolve().parents[1]
FAKE_CMD = f"{sys.executable} -m autotune.testing.fake_engine serve"
RUNTIME_FAILURES = {Outcome.CRASH_UNDER_LOAD, Outcome.REQUEST_ERRORS, Outcome.IMAGE_LIMIT}

LLAMA_31_8B = json.loads((ROOT / "examples" / "llama-3.1-8b" / "config.json").read_text())
LLAVA_15_7B = json.loads((ROOT / "examples" / "llava-1.5-7b" / "config.json").read_text())
LLAMA_2_7B = {  # multi-head attention: 0.5 MiB of KV cache per token
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "torch_dtype": "float16",
    "vocab_size": 32000,
}
LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
LLAMA_32_3B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "num_attention_heads": 24,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "torch_dtype": "bfloat16",
    "vocab_size": 32000,
}


LANDSCAPES: tuple[Landscape, ...] = (
    Landscape(
        key="a",
        name="oom-region",
        shape="text model; a third of the space OOMs in profiling (big batches) or CUDA graphs",
        config=LLAMA_31_8B,
        gpu="L4:24",
        env={"AUTOTUNE_FAKE_ACT_FACTOR": "96"},
        workload=Workload(input_len=256, output_len=32),
        ranges={"max_num_seqs": "8:256", "max_model_len": "4096"},
    ),
    Landscape(
        key="b",
        name="capture-cliff",
        shape="KV-bound long prompts: throughput climbs with utilization up to the cliff",
        config=LLAMA_31_8B,
        gpu="L4:24",
        env={},
        workload=Workload(input_len=1024, output_len=32),
        ranges={
            "gpu_memory_utilization": "0.80:0.99",
            "max_num_seqs": "8:256",
            "max_model_len": "4096",
        },
    ),
    Landscape(
        key="c",
        name="long-context",
        shape="max_model_len 32k..128k: three quarters of the space is kv_too_small",
        config=LLAMA_31_8B,
        gpu="L4:24",
        env={},
        workload=Workload(input_len=512, output_len=32),
        ranges={"max_num_seqs": "8:256"},
        min_model_len=32768,
    ),
    Landscape(
        key="d",
        name="plateau",
        shape="small model, 64 requests: flat once max_num_seqs >= 64 and batches are big",
        config=LLAMA_32_1B,
        gpu="A10G:24",
        env={},
        workload=Workload(input_len=128, output_len=32, num_prompts=64),
        ranges={"max_model_len": "8192"},
    ),
    Landscape(
        key="e",
        name="vision",
        shape="LLaVA, 2 images per request: encoder-profiling OOM at large batch budgets",
        config=LLAVA_15_7B,
        gpu="L4:24",
        env={"AUTOTUNE_FAKE_IMAGE_MIB": "400"},
        workload=Workload(input_len=64, output_len=32),
        ranges={"max_num_seqs": "8:128", "max_model_len": "4096"},
        min_images=2,
        image_size=(336, 336),
    ),
    Landscape(
        key="f",
        name="busy-gpu",
        shape="16 GiB GPU with 3 GiB used by another process: 0.9 (the default) and up fail",
        config=LLAMA_32_3B,
        gpu="A4000:16",
        env={"AUTOTUNE_FAKE_GPU_MEMORY_GIB": "16", "AUTOTUNE_FAKE_GPU_USED_GIB": "3"},
        workload=Workload(input_len=512, output_len=32),
        ranges={"max_num_seqs": "8:256", "max_model_len": "8192"},
    ),
    Landscape(
        key="g",
        name="crash-under-load",
        shape="boots at utilization >= 0.90 but dies under load (the default too)",
        config=MISTRAL_7B,
        gpu="A10G:24",
        env={"AUTOTUNE_FAKE_LOAD_OOM_UTIL": "0.9", "AUTOTUNE_FAKE_ACT_FACTOR": "48"},
        workload=Workload(input_len=384, output_len=32),
        ranges={"max_num_seqs": "8:256", "max_model_len": "8192"},
    ),
)


# --- a landscape made concrete: autotune's own preparation ------------------------------------


@dataclass
class Problem:
    land: Landscape
    model_dir: Path
    prep: Prepared
    requests: list[Request]
    truth: FakeTruth
    default_params: dict[str, Value]
    options: TuneOptions

    @property
    def coarse(self) -> bool:
        """A generated scenario: its optimum starts from the coarser grid."""
        return self.land not in LANDSCAPES

    @property
    def space(self) -> SearchSpace:
        return self.prep.space


def make_problem(land: Landscape, workdir: Path) -> Problem:
    """What ``api.tune`` builds before its first launch (``prepare``, the requests, defaults)."""
    model_dir = workdir / land.name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(land.config))
    options = TuneOptions(
        model=str(model_dir),
        gpu=land.gpu,
        ranges=dict(land.ranges),
        min_model_len=land.min_model_len,
        workload=land.workload,
        vllm_cmd=FAKE_CMD,
        min_images=land.min_images,
        image_size_hint=land.image_size,
        quiet=True,
    )
    with contextlib.redirect_stderr(io.StringIO()):  # prepare's notes ("not checked", ...)
        prep = prepare(options)
    wl, space = prep.workload, prep.space
    num_prompts = wl.num_prompts or max(64, 2 * int(space["max_num_seqs"].high))  # as api.tune
    requests = build_requests(wl, num_prompts=num_prompts, vocab_size=prep.spec.vocab_size)
    truth = FakeTruth(config=land.config, env=land.env, requests=requests, model_tag=str(model_dir))
    defaults = space.default_params(vllm_defaults(prep.hardware, prep.spec))
    return Problem(land, model_dir, prep, requests, truth, defaults, options)


# --- suggesters for the baselines (SearchSpace.sample asks them like an Optuna trial) ---------


class RandomSuggester:
    """Uniform draws: log-uniform on log dimensions, on the 0.01 grid for the utilization."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        if log:
            x = math.exp(self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))
        else:
            x = self.rng.uniform(low - 0.5, high + 0.5)
        return min(max(round(x), low), high)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if step:
            n = round((high - low) / step)
            return low + self.rng.randint(0, n) * step
        return self.rng.uniform(low, high)


class FixedSuggester:
    """Returns a given point, kept inside the bounds the space asks with."""

    def __init__(self, point: Mapping[str, Value]) -> None:
        self.point = point

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return min(max(int(self.point[name]), low), high)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return min(max(float(self.point[name]), low), high)


def levels(dim: Dim, n: int) -> list[Value]:
    """``n`` evenly spaced values of a dimension, in its own scale (centres of ``n`` strata)."""
    fractions = [(i + 0.5) / n for i in range(n)]
    if dim.is_float:
        steps = round((float(dim.high) - float(dim.low)) / UTIL_STEP)
        return [round(float(dim.low) + round(f * steps) * UTIL_STEP, 2) for f in fractions]
    low, high = int(dim.low), int(dim.high)
    if dim.log:
        values = [
            round(math.exp(math.log(low) + f * (math.log(high) - math.log(low)))) for f in fractions
        ]
    else:
        values = [round(low + f * (high - low)) for f in fractions]
    return list(dict.fromkeys(min(max(v, low), high) for v in values))


def grid_points(space: SearchSpace, budget: int) -> list[dict[str, Value]]:
    """The coarsest grid with at least ``budget`` points: levels added one dimension at a time."""
    dims = list(space.tuned)
    counts = [1] * len(dims)
    sizes = [_distinct(d) for d in dims]
    while math.prod(counts) < budget:
        growable = [i for i in range(len(dims)) if counts[i] < sizes[i]]
        if not growable:
            break
        i = min(growable, key=lambda j: (counts[j], j))
        counts[i] += 1
    axes = [levels(d, n) for d, n in zip(dims, counts, strict=True)]
    return [
        dict(zip([d.name for d in dims], combo, strict=True)) for combo in itertools.product(*axes)
    ]


def _distinct(dim: Dim) -> int:
    if dim.is_float:
        return round((float(dim.high) - float(dim.low)) / UTIL_STEP) + 1
    return int(dim.high) - int(dim.low) + 1


# --- the landscape's optimum ---------------------------------------------------------------------

GRID_LEVELS = 16  # log-spaced values of max_num_seqs and max_num_batched_tokens, ends included
# Generated scenarios (dozens of them): a coarser grid (every other utilization step, 8 batch
# levels) before the same local search, which walks single utilization and integer steps.
COARSE_UTIL_EVERY = 2
COARSE_LEVELS = 8
LEN_LEVELS = 4  # of max_model_len
IMAGE_LEVELS = 5  # of the image limit (its lowest values included)
REFINE_STARTS = 4  # best grid points a local integer search starts from
REFINE_SHARES = (0.16, 0.04, 0.01)  # its move sizes, in turn

PROBLEMS: dict[str, Problem] = {}  # built before the worker processes fork
FINISH: dict[str, Any] = {}  # --finish, set before the worker processes fork


def normalise(space: SearchSpace, point: Mapping[str, Value]) -> dict[str, Value]:
    """A point as ``SearchSpace.sample`` would give it (``max_num_batched_tokens >= seqs``)."""
    return space.sample(FixedSuggester(point))


def evaluate(problem: Problem, params: Mapping[str, Value]) -> TrialResult:
    return problem.truth.result(problem.space.args(params), log_path=Path("-"))


def value_of(problem: Problem, params: Mapping[str, Value]) -> float:
    result = evaluate(problem, params)
    return result.throughput if result.outcome is Outcome.OK else 0.0


def fine_axes(space: SearchSpace, *, coarse: bool = False) -> list[list[Value]]:
    """Every utilization step; log-spaced batch sizes and lengths; the lowest image limits.
    ``coarse``: every other utilization step (the top one kept), fewer batch levels."""
    axes: list[list[Value]] = []
    for d in space.tuned:
        if d.is_float:
            steps = round((float(d.high) - float(d.low)) / UTIL_STEP)
            every = COARSE_UTIL_EVERY if coarse else 1
            picked = sorted({*range(steps, -1, -every), 0})
            axes.append([round(float(d.low) + i * UTIL_STEP, 2) for i in picked])
            continue
        low, high = int(d.low), int(d.high)
        batch = COARSE_LEVELS if coarse else GRID_LEVELS
        k = {"max_model_len": LEN_LEVELS, "image_limit": IMAGE_LEVELS}.get(d.name, batch)
        if high - low + 1 <= k:
            axes.append(list(range(low, high + 1)))
        elif not d.log:  # the image limit: its lowest values, then evenly spaced
            spaced = [round(low + i * (high - low) / (k - 2)) for i in range(k - 1)]
            axes.append(sorted({low, low + 1, *spaced}))
        else:
            ratio = math.log(high) - math.log(low)
            axes.append(
                sorted({round(math.exp(math.log(low) + i * ratio / (k - 1))) for i in range(k)})
            )
    return axes


def _grid_chunk(
    key: str, first: Value
) -> tuple[list[tuple[float, dict[str, Value]]], dict[str, int]]:
    """Evaluate the fine grid's points whose first dimension is ``first``."""
    problem = PROBLEMS[key]
    space = problem.space
    axes = fine_axes(space, coarse=problem.coarse)
    names = [d.name for d in space.tuned]
    scored: dict[tuple[Value, ...], float] = {}
    outcomes: dict[str, int] = {}
    for combo in itertools.product([first], *axes[1:]):
        params = normalise(space, dict(zip(names, combo, strict=True)))
        result = evaluate(problem, params)
        outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1
        ok = result.outcome is Outcome.OK
        scored[tuple(params[n] for n in names)] = result.throughput if ok else 0.0
    top = sorted(scored.items(), key=lambda kv: -kv[1])[:REFINE_STARTS]
    return [(v, dict(zip(names, p, strict=True))) for p, v in top], outcomes


def _refine(key: str, start: dict[str, Value]) -> tuple[float, dict[str, Value]]:
    """Pattern search on the integer/step lattice: moves of 16%, 4%, then 1% (at least one
    step; single utilization steps throughout)."""
    problem = PROBLEMS[key]
    space = problem.space
    x = normalise(space, start)
    fx = value_of(problem, x)
    for share in REFINE_SHARES:
        while True:
            best = (fx, x)
            for d in space.tuned:
                for sign in (-1, 1):
                    y = dict(x)
                    if d.is_float:
                        y[d.name] = d.clamp(round(float(x[d.name]) + sign * UTIL_STEP, 2))
                    else:
                        step = max(1, round(int(x[d.name]) * share))
                        y[d.name] = d.clamp(int(x[d.name]) + sign * step)
                    y = normalise(space, y)
                    if y != x and (fy := value_of(problem, y)) > best[0]:
                        best = (fy, y)
            if best[0] <= fx:
                break
            fx, x = best
    return fx, x


@dataclass(frozen=True)
class Optimum:
    value: float
    params: dict[str, Value]
    points: int  # grid points evaluated
    outcomes: dict[str, float]  # share of the grid per outcome
    seconds: float


def _cache_key(problem: Problem) -> str:
    import hashlib

    h = hashlib.sha256()
    land = problem.land
    h.update(repr((land, problem.space.describe(), len(problem.requests))).encode())
    h.update(repr((GRID_LEVELS, LEN_LEVELS, IMAGE_LEVELS, REFINE_STARTS, REFINE_SHARES)).encode())
    if problem.coarse:
        h.update(repr((COARSE_UTIL_EVERY, COARSE_LEVELS)).encode())
    sources = sorted((ROOT / "autotune" / "testing").glob("*.py"))
    sources += [
        ROOT / "autotune" / n
        for n in (
            "search/space.py",
            "search/space_build.py",
            "load/workload.py",
            "trial/runner.py",
            "trial/verdict.py",
            "engine/outcome.py",
            "load/metrics.py",
        )
    ]
    for path in sources:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def optima(keys: Sequence[str], pool: Pool, *, cache: bool) -> dict[str, Optimum]:
    """Each landscape's optimum: the fine grid, then local searches from its best points."""
    cache_dir = Path(tempfile.gettempdir()) / "autotune-tuning-quality"
    found: dict[str, Optimum] = {}
    todo = []
    for key in keys:
        path = cache_dir / f"{key}-{_cache_key(PROBLEMS[key])}.json"
        if cache and path.is_file():
            found[key] = Optimum(**json.loads(path.read_text()))
        else:
            todo.append((key, path))
    started = {key: time.monotonic() for key, _ in todo}
    chunks = {
        key: pool.map(
            _grid_chunk,
            [
                (key, first)
                for first in fine_axes(PROBLEMS[key].space, coarse=PROBLEMS[key].coarse)[0]
            ],
        )
        for key, _ in todo
    }
    for key, path in todo:
        tops: list[tuple[float, dict[str, Value]]] = []
        counts: dict[str, int] = {}
        for top, outcomes in chunks[key]():
            tops += top
            for name, n in outcomes.items():
                counts[name] = counts.get(name, 0) + n
        starts = sorted(tops, key=lambda t: -t[0])[:REFINE_STARTS]
        refined = pool.map(_refine, [(key, p) for _, p in starts])()
        best_value, best_params = max([*starts, *refined], key=lambda t: t[0])
        total = sum(counts.values())
        found[key] = opt = Optimum(
            value=best_value,
            params=best_params,
            points=total,
            outcomes={k: n / total for k, n in sorted(counts.items(), key=lambda kv: -kv[1])},
            seconds=time.monotonic() - started[key],
        )
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(opt.__dict__))
    return found


# --- the tuners ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One tuning run: the true value of the configuration it chose, and how its launches
    ended. Launches are measured with the scenario's noise; ``best`` and ``found`` are exact."""

    key: str
    method: str
    seed: int
    budget: int
    best: float  # the chosen configuration's true throughput (0: chose nothing)
    launches: int
    startup_failures: int
    runtime_failures: int
    skipped: int = 0  # autotune: candidates the pre-screen recorded without a launch
    best_params: dict[str, Any] = field(default_factory=dict)  # the chosen vLLM arguments
    found: float = 0.0  # the best true throughput among its launches
    late_failures: int = 0  # startup failures after the 5th launch


LATE_AFTER = 5


def _summarise(
    key: str,
    method: str,
    seed: int,
    budget: int,
    launched: Sequence[tuple[dict[str, Any], TrialResult]],
    chosen: Mapping[str, Any] | None,
    skipped: int = 0,
) -> Run:
    """``launched``: each launch's vLLM arguments and exact result, in launch order."""
    found, startup, runtime, late = 0.0, 0, 0, 0
    for i, (_, result) in enumerate(launched):
        if result.outcome is Outcome.OK:
            found = max(found, result.throughput)
        elif result.outcome in RUNTIME_FAILURES:
            runtime += 1
        else:
            startup += 1
            late += i >= LATE_AFTER
    best = PROBLEMS[key].truth.throughput(chosen) if chosen is not None else 0.0
    return Run(
        key,
        method,
        seed,
        budget,
        best,
        len(launched),
        startup,
        runtime,
        skipped,
        dict(chosen or {}),
        found,
        late,
    )


def _noisy_choice(
    problem: Problem, launched: Sequence[tuple[dict[str, Any], TrialResult]], rng: random.Random
) -> dict[str, Any] | None:
    """What a baseline keeps: the launch with the best measured (noisy) throughput."""
    best: tuple[float, dict[str, Any]] | None = None
    for args, result in launched:
        if result.outcome is Outcome.OK:
            seen = result.throughput * speed_factor(problem.truth.env.noise, rng)
            if best is None or seen > best[0]:
                best = (seen, args)
    return None if best is None else best[1]


class _Quiet:
    """A ``study.Reporter`` that prints nothing."""

    def trial_started(self, *, number: int, launch: int, budget: int, args: dict[str, Any]) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        pass

    def trial_skipped(self, trial: optuna.trial.FrozenTrial) -> None:
        pass


PRESCREENS = ("memory", "classes", "none", "oracle")


class OracleScreen:
    """autotune's screen, plus a perfect memory model: every configuration that would fail at
    startup is skipped without a launch (an upper bound for pre-screen work, not autotune)."""

    prescreen = True

    def __init__(self, problem: Problem, inner: st.Screen) -> None:
        self.truth, self.inner = problem.truth, inner

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None:
        self.inner.learn_all(trials)

    def memory_edge(self, args: Mapping[str, Any]) -> float | None:
        return getattr(self.inner, "memory_edge", lambda _: None)(args)

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None:
        self.inner.learn_trial(trial=trial, record=record)

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        return self.inner.predict_kv_tokens(args)

    def check(self, args: Mapping[str, Any]) -> str | None:
        outcome = self.truth.result(args, log_path=Path("-")).outcome
        if outcome is not Outcome.OK and outcome not in RUNTIME_FAILURES:
            return f"oracle: {outcome.value}"
        return self.inner.check(args)


def make_screen(problem: Problem, mode: str) -> st.Screen | None:
    """``memory``: what ``api.tune`` passes (``MemoryScreen.build``, no extra args);
    ``classes``: the failure-class rules alone; ``none``; ``oracle``: ``memory`` + perfect."""
    from autotune.search.screen import MemoryScreen

    spec, hardware = problem.prep.spec, problem.prep.hardware
    if mode == "none":
        return None
    if mode == "classes":
        return ClassScreen(image_tokens=spec.image_tokens)
    screen = MemoryScreen.build(spec=spec, hardware=hardware, extra_args=(), prescreen=True)
    return OracleScreen(problem, screen) if mode == "oracle" else screen


def run_autotune(
    key: str, seed: int, budget: int, sampler: str, screen: str = "memory", guide: bool = True
) -> Run:
    """autotune's own study loop, built as ``api.tune`` builds it, on the in-process runner:
    the study, the finalists' re-measures within the budget, then its choice (no soak)."""
    problem = PROBLEMS[key]
    study, chosen = autotune_study(key, seed, budget, sampler, screen, guide)
    launched, skipped = [], 0
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if not record.launched:
            skipped += record.outcome == Outcome.SKIPPED.value
            continue
        args = dict(record.vllm_args)
        launched.append((args, problem.truth.result(args, log_path=Path("-"))))
    return _summarise(key, "autotune", seed, budget, launched, chosen, skipped)


def finish_of(problem: Problem) -> finalize.Finish:
    """The re-measure plan ``api.tune`` would use, or ``--finish``'s."""
    finish = finish_for(problem.options)
    if FINISH:  # --finish: another re-measure plan than TuneOptions' defaults
        finish = dataclasses.replace(finish, **FINISH)
    return finish


def autotune_study(
    key: str, seed: int, budget: int, sampler: str, screen: str, guide: bool
) -> tuple[optuna.Study, dict[str, Any] | None]:
    """The study after ``budget`` launches, and the arguments autotune would save."""
    problem = PROBLEMS[key]
    prep = problem.prep
    finish = finish_of(problem)
    name = st.study_name(
        model=prep.spec.name,
        hardware_key=prep.hardware.key,
        workload=prep.workload.signature(),
        objective="throughput",
        space=prep.space,
    )
    storage: Any = optuna.storages.InMemoryStorage()  # open_study passes it to create_study
    study = st.open_study(name=name, storage=storage, seed=seed)
    custom = make_sampler(sampler, seed)
    if custom is not None:
        study.sampler = custom
    knowledge = make_screen(problem, screen)
    guesses = cast(Guesses | None, knowledge)  # every screen make_screen builds answers the guide
    plan = st.StudyPlan(
        study=study,
        space=prep.space,
        runner=LandscapeRunner(truth=problem.truth, seed=seed),
        budget=budget - finalize.reserve(finish, trials=budget),
        log_dir=Path(tempfile.gettempdir()) / "autotune-tuning-quality" / "logs",
        default_params=problem.default_params,
        prescreen=knowledge,
        guide=for_goal(
            kind="throughput",
            space=prep.space,
            seed=seed,
            knowledge=guesses,
            load=Load.of(
                problem.requests, concurrency=None, image_tokens=prep.spec.image_tokens or 0
            ),
        )
        if guide
        else None,
    )
    finalize.search(plan, finish, reporter=_Quiet(), budget=budget)
    finalize.remeasure(plan, finish, reporter=_Quiet(), budget=budget)
    ranked = best.ranked(
        study,
        goal=plan.goal,
        noise=finish.noise,
        statistic=finish.statistic,
        repeats=finish.settled,
        most_images=finish.most_images,
    )
    return study, (ranked[0].args if ranked else None)


def trace(key: str, seed: int, budget: int, ns: argparse.Namespace, optimum: float) -> None:
    """Every trial of one autotune study: where it came from, what ran, how it ended."""
    problem = PROBLEMS[key]
    study, chosen = autotune_study(key, seed, budget, ns.sampler, ns.prescreen, not ns.no_guide)
    top = 0.0
    print(f"\n== trace of landscape {key}, seed {seed}, {budget} launches")
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        args = record.vllm_args
        ran = " ".join(f"{k.removeprefix('--')}={v}" for k, v in args.items())
        if record.launched:
            result = problem.truth.result(args, log_path=Path("-"))
            value = result.throughput if result.outcome is Outcome.OK else 0.0
            top = max(top, value)
            end = f"{record.outcome} {value / optimum:.3f} (best {top / optimum:.3f})"
            end += (
                f"; measured {(t.values or [0.0])[0]:.1f}, KV {record.startup.kv_cache_tokens}"
                f" tokens, peak {record.peak_kv_cache_usage_pct}% running"
                f" {record.peak_requests_running} waiting {record.peak_requests_waiting},"
                f" {record.preemptions} preemptions"
            )
        else:
            end = f"{record.outcome}: {record.reason}"[:90]
        source = record.source or "sampler"
        print(f"  {t.number:3d} {source}\n       {ran}\n       -> {end}")
    print("  ranking (value: the statistic of its runs; true: noise-free / optimum):")
    finish = finish_of(problem)
    ranked = best.ranked(
        study, goal=Goal(), noise=finish.noise, statistic=finish.statistic, repeats=finish.settled
    )
    for c in ranked[:6]:
        true = problem.truth.throughput(c.args) / optimum
        runs = " ".join(f"{v:.1f}" for v in c.measured)
        print(
            f"    trials {[t.number for t in c.trials]}: value {c.value:.1f} ({runs}), "
            f"reserved {c.reserved_gib:.2f} GiB, true {true:.3f}"
        )
    value = problem.truth.throughput(chosen) if chosen else 0.0
    print(f"  chosen: {json.dumps(chosen)} -> {value / optimum:.3f}")


def run_random(key: str, seed: int, budgets: Sequence[int]) -> list[Run]:
    """Uniform draws; the draws do not depend on the budget, so one run gives every budget."""
    problem = PROBLEMS[key]
    rng = random.Random(f"random-{key}-{seed}")
    draws = [
        problem.space.args(problem.space.sample(RandomSuggester(rng))) for _ in range(max(budgets))
    ]
    launched = [(a, problem.truth.result(a, log_path=Path("-"))) for a in draws]
    runs = []
    for b in budgets:
        chosen = _noisy_choice(problem, launched[:b], random.Random(f"noise-{key}-{seed}"))
        runs.append(_summarise(key, "random", seed, b, launched[:b], chosen))
    return runs


def run_grid(key: str, seed: int, budget: int) -> Run:
    """The coarsest grid with at least ``budget`` points, in a random order, cut at the budget."""
    problem = PROBLEMS[key]
    points = grid_points(problem.space, budget)
    random.Random(f"grid-{key}-{seed}").shuffle(points)
    launched = []
    for point in points[:budget]:
        args = problem.space.args(normalise(problem.space, point))
        launched.append((args, problem.truth.result(args, log_path=Path("-"))))
    chosen = _noisy_choice(problem, launched, random.Random(f"noise-{key}-{seed}"))
    return _summarise(key, "grid", seed, budget, launched, chosen)


# --- samplers to compare ------------------------------------------------------------------------


PRIMES = (2, 3, 5, 7, 11, 13, 17, 19)


class HaltonSampler(optuna.samplers.BaseSampler):
    """A randomly shifted Halton sequence (no scipy): even coverage for a warm start."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._dims: dict[str, tuple[int, float]] = {}  # name -> (prime, shift)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Any, trial: Any, param_name: str, param_distribution: Any
    ) -> Any:
        if param_name not in self._dims:
            self._dims[param_name] = (PRIMES[len(self._dims) % len(PRIMES)], self._rng.random())
        prime, shift = self._dims[param_name]
        u = (_radical_inverse(trial.number + 1, prime) + shift) % 1.0
        dist = param_distribution
        if isinstance(dist, optuna.distributions.FloatDistribution):
            if dist.step:
                n = round((dist.high - dist.low) / dist.step)
                return dist.low + min(int(u * (n + 1)), n) * dist.step
            return dist.low + u * (dist.high - dist.low)
        if isinstance(dist, optuna.distributions.IntDistribution):
            if dist.log:
                x = math.exp(
                    math.log(dist.low - 0.5)
                    + u * (math.log(dist.high + 0.5) - math.log(dist.low - 0.5))
                )
            else:
                x = dist.low - 0.5 + u * (dist.high - dist.low + 1)
            return min(max(round(x), dist.low), dist.high)
        return dist.choices[min(int(u * len(dist.choices)), len(dist.choices) - 1)]


def _radical_inverse(i: int, base: int) -> float:
    out, f = 0.0, 1.0 / base
    while i:
        out += (i % base) * f
        i //= base
        f /= base
    return out


class WarmStart(optuna.samplers.BaseSampler):
    """``first`` for the first ``n`` finished trials (skipped ones included), then ``then``."""

    def __init__(
        self, first: optuna.samplers.BaseSampler, then: optuna.samplers.BaseSampler, n: int
    ) -> None:
        self.first, self.then, self.n = first, then, n

    def _active(self, study: optuna.Study) -> optuna.samplers.BaseSampler:
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return self.first if len(done) < self.n else self.then

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self._active(study).infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return self._active(study).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Any, trial: Any, param_name: str, param_distribution: Any
    ) -> Any:
        return self._active(study).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.then.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.then.after_trial(study, trial, state, values)


class LocalTPE(optuna.samplers.BaseSampler):
    """TPE, except that a share ``p`` of the trials after the first ``n`` perturb the best
    feasible trial so far (utilization by a few 0.01 steps, log dimensions by ~``sigma`` in log
    space): TPE finds the region, the local moves climb to the edge of the feasible region,
    where the optimum usually is."""

    def __init__(
        self,
        seed: int | None,
        *,
        n: int = 3,
        p: float = 0.5,
        sigma: float = 0.2,
        steps: float = 2.0,
        **tpe: Any,
    ) -> None:
        self.tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n, **tpe)
        self.n, self.p, self.sigma, self.steps = n, p, sigma, steps
        self._rng = random.Random(seed)
        self._local: dict[int, dict[str, Any]] = {}  # trial number -> the incumbent's params

    def _incumbent(self, study: optuna.Study) -> dict[str, Any] | None:
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        feasible = [t for t in done if all(v <= 0 for v in t.constraints.values())]
        if len(done) < self.n or not feasible:
            return None
        return max(feasible, key=lambda t: t.value or 0.0).params

    def before_trial(self, study: Any, trial: Any) -> None:
        self.tpe.before_trial(study, trial)
        best = self._incumbent(study)
        if best is not None and self._rng.random() < self.p:
            self._local[trial.number] = best

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        if trial.number in self._local:
            return {}
        return self.tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        if trial.number in self._local:
            return {}
        return self.tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Any, trial: Any, param_name: str, param_distribution: Any
    ) -> Any:
        best = self._local.get(trial.number)
        dist = param_distribution
        if best is None or param_name not in best:
            return self.tpe.sample_independent(study, trial, param_name, dist)
        x = best[param_name]
        if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step:
            k = round(self._rng.gauss(0.0, self.steps))
            return min(max(x + k * dist.step, dist.low), dist.high)
        if isinstance(dist, optuna.distributions.IntDistribution) and dist.log:
            y = round(math.exp(math.log(x) + self._rng.gauss(0.0, self.sigma)))
            return min(max(y, dist.low), dist.high)
        if isinstance(dist, optuna.distributions.IntDistribution):
            y = x + round(self._rng.gauss(0.0, self.steps))
            return min(max(y, dist.low), dist.high)
        return self.tpe.sample_independent(study, trial, param_name, dist)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._local.pop(trial.number, None)
        self.tpe.after_trial(study, trial, state, values)


def _options(text: str) -> dict[str, Any]:
    """``a=1,b=true,c=0.5`` → keyword arguments."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        name, _, raw = item.partition("=")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


SAMPLER_HELP = (
    "default (what study.open_study makes: TPE, multivariate, constraints), "
    "tpe[:OPTIONS] (TPESampler keyword arguments, e.g. tpe:n_startup_trials=5,group=true; "
    "gamma_share=0.2 for gamma), halton-tpe[:n=K,OPTIONS] (K Halton points, then TPE), "
    "local-tpe[:n=K,p=P,sigma=S,steps=U] (TPE; after K trials a share P perturbs the best "
    "trial), random, gp[:OPTIONS] (needs torch and scipy), cmaes (needs cmaes)"
)


def make_sampler(spec: str, seed: int) -> optuna.samplers.BaseSampler | None:
    """The sampler named by ``--sampler`` (None: keep the study's own)."""
    name, _, rest = spec.partition(":")
    kw = _options(rest)
    if name == "default":
        return None
    if "gamma_share" in kw:  # TPE's "good" share of the trials (Optuna: 10%, at most 25)
        share = float(kw.pop("gamma_share"))
        kw["gamma"] = lambda n: min(math.ceil(share * n), 25)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **kw)
    if name == "halton-tpe":
        n = int(kw.pop("n", 8))
        tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n, **kw)
        return WarmStart(HaltonSampler(seed), tpe, n)
    if name == "local-tpe":
        return LocalTPE(seed, **kw)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **kw)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **kw)
    raise SystemExit(f"--sampler {spec!r}: one of {SAMPLER_HELP}")


def check_sampler(spec: str) -> None:
    """GP needs torch and scipy, CMA-ES the cmaes package: say so before any work starts."""
    name = spec.partition(":")[0]
    needs = {"gp": ("torch", "scipy"), "cmaes": ("cmaes",)}.get(name, ())
    import importlib.util

    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"--sampler {spec}: needs {', '.join(missing)}, not installed here")
    make_sampler(spec, 0)


# --- a small process pool (fork: the workers inherit the problems) ----------------------------


class Pool:
    """``map`` submits at once and returns a function that waits for the results, in order."""

    def __init__(self, jobs: int) -> None:
        import multiprocessing

        self.executor = None
        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            self.executor = ProcessPoolExecutor(jobs, mp_context=context)

    def map(
        self, fn: Callable[..., Any], calls: Iterable[tuple[Any, ...]]
    ) -> Callable[[], list[Any]]:
        if self.executor is None:
            results = [fn(*c) for c in calls]
            return lambda: results
        futures = [self.executor.submit(fn, *c) for c in calls]
        return lambda: [f.result() for f in futures]

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()


# --- report --------------------------------------------------------------------------------------


METHODS = ("autotune", "grid", "random")
SETS = ("regression", "dev", "eval", "all")


def _ratios(runs: Iterable[Run], optimum: Mapping[str, float]) -> list[float]:
    return [r.best / optimum[r.key] if optimum[r.key] > 0 else 1.0 for r in runs]


def _cell(runs: Sequence[Run], optimum: Mapping[str, float]) -> str:
    ratios = _ratios(runs, optimum)
    launches = sum(r.launches for r in runs)
    fails = sum(r.startup_failures for r in runs) / launches if launches else 0.0
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}) {fails:4.0%}"


def print_tables(
    runs: Sequence[Run],
    optimum: Mapping[str, float],
    keys: Sequence[str],
    budgets: Sequence[int],
    methods: Sequence[str],
) -> None:
    width = 22
    for budget in budgets:
        print(
            f"\n== {budget} launches: best throughput found / optimum, median (worst) over seeds; "
            "share of launches that failed at startup"
        )
        print(f"{'landscape':<20} {'optimum':>8}  " + "".join(f"{m:<{width}}" for m in methods))
        for key in keys:
            row = f"{key} {PROBLEMS[key].land.name:<18} {optimum[key]:8.1f}  "
            for method in methods:
                these = [r for r in runs if (r.key, r.method, r.budget) == (key, method, budget)]
                row += f"{_cell(these, optimum):<{width}}"
            print(row)
        row = f"{'all (median, worst)':<29}  "
        for method in methods:
            ratios = _ratios([r for r in runs if (r.method, r.budget) == (method, budget)], optimum)
            row += f"{statistics.median(ratios):.3f} ({min(ratios):.3f})".ljust(width)
        print(row)


def print_criteria(
    runs: Sequence[Run], optimum: Mapping[str, float], keys: Sequence[str], budget: int
) -> bool:
    """The issue's bar at ``budget`` launches; True if every check passes."""

    def of(method: str, key: str | None = None) -> list[float]:
        chosen = [r for r in runs if r.method == method and r.budget == budget]
        return _ratios([r for r in chosen if key in (None, r.key)], optimum)

    worst = {k: min(of("autotune", k)) for k in keys}
    medians = {k: {m: statistics.median(of(m, k)) for m in METHODS} for k in keys}
    overall = statistics.median(of("autotune"))
    lowest = min(keys, key=lambda k: worst[k])
    low_median = min(keys, key=lambda k: medians[k]["autotune"])
    checks = [
        (
            all(v >= 0.95 for v in worst.values()),
            "every landscape, every seed >= 0.95 of the optimum: lowest "
            f"{worst[lowest]:.3f} ({lowest})",
        ),
        (
            all(m["autotune"] >= 0.95 for m in medians.values()),
            "every landscape, median over seeds >= 0.95: lowest "
            f"{medians[low_median]['autotune']:.3f} ({low_median})",
        ),
        (overall >= 0.98, f"median over landscapes x seeds >= 0.98: {overall:.3f}"),
    ]
    for baseline in ("grid", "random"):
        behind = [k for k in keys if medians[k]["autotune"] < medians[k][baseline]]
        detail = ", ".join(
            f"{k} {medians[k]['autotune']:.3f} vs {medians[k][baseline]:.3f}" for k in keys
        )
        checks.append(
            (not behind, f"autotune >= {baseline} on every landscape (medians): {detail}")
        )
    studies = [r for r in runs if r.method == "autotune" and r.budget == budget]
    calm = sum(1 for r in studies if r.late_failures <= 2) / max(len(studies), 1)
    checks.append(
        (
            calm >= 0.9,
            f"at most 2 startup failures after launch {LATE_AFTER} in >= 90% of studies: "
            f"{calm:.0%}",
        )
    )
    print(f"\n== criteria at {budget} launches (autotune)")
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for ok, _ in checks)


# --- verification against the real fake engine --------------------------------------------------

VERIFY_ENV = {"AUTOTUNE_FAKE_TIME_SCALE": "2", "AUTOTUNE_FAKE_STARTUP_S": "0.2"}


def verify(keys: Sequence[str], found: Mapping[str, Optimum], workdir: Path) -> None:
    """Launch the fake engine for real (``TrialRunner``, as a study does) on a few configurations
    per landscape: vLLM's defaults, the optimum, the middle of the space, small batches, and a
    failing grid point. Compare outcome, KV cache and throughput with the in-process values.

    TIME_SCALE=2 lets the engine's simulated step time dominate the Python overhead of streaming
    every token over HTTP on a small machine (at 0.5 the real runs lose 30-50% to it, unevenly,
    and the ranking changes)."""
    print(f"\n== verification: real fake-engine launches vs in-process values ({VERIFY_ENV})")
    for key in keys:
        base = PROBLEMS[key].land
        land = dataclasses.replace(base, env={**base.env, **VERIFY_ENV})
        problem = make_problem(land, workdir / "verify")
        space = problem.space
        runner = TrialRunner(
            command=problem.prep.command,
            model=str(problem.model_dir),
            requests=problem.requests,
            env={**problem.prep.env, **land.env},
            startup_timeout_s=120,
        )
        mid = {d.name: levels(d, 3)[1] for d in space.tuned}
        small = {d.name: mid[d.name] if d.is_float else levels(d, 5)[0] for d in space.tuned}
        points = [problem.default_params, found[key].params, mid, small]
        points += [
            next(
                p
                for p in grid_points(space, 16)
                if evaluate(problem, normalise(space, p)).outcome is not Outcome.OK
            )
        ]
        pairs = []
        for i, point in enumerate(points):
            params = normalise(space, point)
            args = space.args(params)
            log = workdir / "verify" / f"{key}-{i}.log"
            real = runner.run(args=args, log_path=log, on_phase=lambda _: None)
            calc = problem.truth.result(args, log_path=log)
            line = (
                f"  {key} {json.dumps(params)}\n"
                f"      real {real.outcome.value:<16} {real.throughput:7.1f} tok/s, "
                f"KV {real.startup.kv_cache_tokens} | in-process {calc.outcome.value:<16} "
                f"{calc.throughput:7.1f} tok/s, KV {calc.startup.kv_cache_tokens}"
            )
            if real.outcome is not calc.outcome:
                line += " | OUTCOMES DIFFER"
            elif calc.throughput:
                line += f" | real / in-process {real.throughput / calc.throughput:.3f}"
                pairs.append((real.throughput, calc.throughput))
            print(line)
        agree = sum(
            1
            for (r1, c1), (r2, c2) in itertools.combinations(pairs, 2)
            if (r1 - r2) * (c1 - c2) > 0
        )
        total = len(pairs) * (len(pairs) - 1) // 2
        print(f"  {key}: the throughput ranking agrees on {agree} of {total} pairs")


# --- main ----------------------------------------------------------------------------------------


REPORTED = Path(__file__).with_name("reported-splits.txt")


def reported_splits() -> set[int]:
    """Split seeds whose evaluation scenarios a report has already shown (and so seen)."""
    lines = REPORTED.read_text().splitlines() if REPORTED.exists() else []
    return {int(line.split()[0]) for line in lines if line.strip() and not line.startswith("#")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--budgets", default="10,20,40", help="launches per study (default 10,20,40)"
    )
    parser.add_argument(
        "--set",
        choices=SETS,
        default="regression",
        help="regression: the seven hand-made landscapes; dev: the generated development "
        "scenarios (tune the tuner on these); eval: the generated evaluation scenarios (report "
        "only); all",
    )
    parser.add_argument("--landscapes", default="", help="keys (overrides --set)")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=SPLIT_SEED,
        help=f"the draw of dev/eval scenarios (default {SPLIT_SEED}, the recorded split); "
        "another seed gives fresh scenarios, e.g. an evaluation set nobody has seen",
    )
    parser.add_argument("--sampler", default="default", help=SAMPLER_HELP)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument(
        "--verify",
        default="",
        metavar="KEYS",
        help="first launch the real fake engine on 5 configurations of these landscapes "
        "(e.g. a,e; about 20 s per launch)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="autotune only")
    parser.add_argument(
        "--no-guide",
        action="store_true",
        help="autotune without its edge climb, local moves and lift (the sampler alone)",
    )
    parser.add_argument(
        "--prescreen",
        choices=PRESCREENS,
        default="memory",
        help="autotune's pre-screen: memory (as api.tune: MemoryScreen), classes (failure-class "
        "rules alone), none, oracle (memory + a perfect startup-failure screen: the headroom)",
    )
    parser.add_argument("--no-cache", action="store_true", help="recompute the optima")
    parser.add_argument(
        "--trace", metavar="KEY:SEED", help="print every trial of one autotune study and stop"
    )
    parser.add_argument("--json", type=Path, help="write the optima and every run here")
    parser.add_argument(
        "--finish",
        metavar="REPEATS,FINALISTS,STATISTIC",
        help="autotune's re-measure plan instead of the defaults (e.g. 2,3,worst)",
    )
    ns = parser.parse_args(argv)
    reported = reported_splits()
    if ns.set in ("eval", "all") and not ns.landscapes and ns.split_seed in reported:
        print(
            f"note: the evaluation scenarios of split seed {ns.split_seed} have been reported on "
            f"before ({REPORTED.name}): seen, no longer an unseen test; the first fresh seed "
            f"is {max(reported) + 1}"
        )
    budgets = sorted({int(b) for b in ns.budgets.split(",")})
    dev, evaluation = split(ns.split_seed)
    sets = {"regression": LANDSCAPES, "dev": dev, "eval": evaluation}
    sets["all"] = LANDSCAPES + dev + evaluation
    known = {land.key: land for land in sets["all"]}
    keys = [k.strip() for k in ns.landscapes.split(",") if k.strip()]
    keys = keys or [land.key for land in sets[ns.set]]
    if unknown := [k for k in keys if k not in known]:
        raise SystemExit(f"--landscapes: unknown {unknown}; known: {', '.join(known)}")
    check_sampler(ns.sampler)
    if ns.finish:
        repeats, finalists, statistic = ns.finish.split(",")
        FINISH.update(repeats=int(repeats), finalists=int(finalists), statistic=statistic)
    methods = ("autotune",) if ns.no_baselines else METHODS
    _quiet_optuna()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tuning-quality-"))
    for key in keys:
        PROBLEMS[key] = make_problem(known[key], workdir)
    print(
        f"{len(keys)} landscapes, {ns.seeds} seeds, budgets {budgets}; autotune's sampler: "
        f"{ns.sampler}, pre-screen: {ns.prescreen}; {ns.jobs} processes; "
        f"optuna {optuna.__version__}"
    )
    for key in keys:
        p = PROBLEMS[key]
        print(
            f"  {key} {p.land.name}: {p.land.shape}\n      {p.prep.spec.name} on {p.land.gpu} "
            f"{dict(p.land.env)}; {len(p.requests)} x {p.prep.workload.signature()}; "
            f"{p.space.describe()}"
        )
    pool = Pool(ns.jobs)
    try:
        found = optima(keys, pool, cache=not ns.no_cache)
        t_optima = time.monotonic() - started
        print("\n== optima (fine grid, then local search from its best points)")
        for key in keys:
            o = found[key]
            shares = ", ".join(f"{k} {v:.0%}" for k, v in o.outcomes.items())
            print(f"  {key}: {o.value:.1f} tok/s at {json.dumps(o.params)}")
            print(f"     {o.points} grid points: {shares}")
        if ns.trace:
            key, seed = ns.trace.split(":")
            trace(key, int(seed), budgets[0], ns, found[key].value)
            return 0
        if ns.verify:
            verify([k for k in ns.verify.split(",") if k], found, workdir)
        t_tune = time.monotonic()
        seeds = range(ns.seeds)
        calls = [
            (k, s, b, ns.sampler, ns.prescreen, not ns.no_guide)
            for k in keys
            for s in seeds
            for b in budgets
        ]
        waits = [pool.map(run_autotune, calls)]
        if not ns.no_baselines:
            waits.append(
                pool.map(run_grid, [(k, s, b) for k in keys for s in seeds for b in budgets])
            )
            waits.append(pool.map(run_random, [(k, s, budgets) for k in keys for s in seeds]))
        runs: list[Run] = []
        for wait in waits:
            for item in wait():
                runs += item if isinstance(item, list) else [item]
        t_tune = time.monotonic() - t_tune
    finally:
        pool.close()
    # The optimum: the grid's, unless a run found more (then the grid was not fine enough).
    optimum = {k: max([found[k].value, *(r.best for r in runs if r.key == k)]) for k in keys}
    beaten = sum(1 for r in runs if r.best > found[r.key].value * (1 + 1e-9))
    print_tables(runs, optimum, keys, budgets, methods)
    if beaten:
        print(f"\n{beaten} runs found more than the grid's optimum; that value is the optimum")
    ok = True
    if 20 in budgets and not ns.no_baselines:
        ok = print_criteria(runs, optimum, keys, 20)
    skipped = [r.skipped for r in runs if r.method == "autotune"]
    print(
        f"\nautotune: {sum(skipped)} candidates pre-screened without a launch "
        f"({statistics.mean(skipped):.1f} per study)"
    )
    print(
        f"wall time {time.monotonic() - started:.0f} s (optima {t_optima:.0f} s, "
        f"tuning {t_tune:.0f} s) with {ns.jobs} processes"
    )
    if ns.json:
        data = {"optimum": optimum, "found": {k: v.__dict__ for k, v in found.items()}}
        ns.json.write_text(json.dumps({**data, "runs": [r.__dict__ for r in runs]}, indent=1))
    return 0 if ok else 1


def _quiet_optuna() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
