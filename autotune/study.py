"""Study: the Optuna side of tuning. Names, storage, resume, the ask/tell loop and the choice
of the best trial. The only module (with ``api``) that imports Optuna."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import UserError
from autotune.multimodal import image_count
from autotune.objective import TrialResult, TrialRunner
from autotune.outcome import Outcome
from autotune.ranges import Value
from autotune.safety import redact_url
from autotune.sampling import make_sampler
from autotune.space import SearchSpace

MAX_SKIPS_IN_A_ROW = 200
USABLE_SHARE = 0.5  # --images max: "usable" is at least this share of the best throughput
CONSTRAINT = "infeasible"  # > 0: the configuration cannot serve (OOM, KV too small, ...)
INTERRUPTED = "interrupted"


class Screen(Protocol):
    """The study's memory knowledge (``predict.MemoryKnowledge``; ``feasibility.Prescreen`` for
    the class rules alone): learns from launched trials, predicts and pre-screens candidates."""

    def learn_all(self, trials: Iterable[tuple[int, Mapping[str, Any]]]) -> None: ...

    def learn_trial(self, *, trial: int, attrs: Mapping[str, Any]) -> None: ...

    def check(self, args: Mapping[str, Any]) -> str | None: ...

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None: ...


class Reporter(Protocol):
    """Progress sink (``progress.py``): a live display or plain log lines."""

    def trial_started(
        self, *, number: int, launch: int, budget: int, args: dict[str, Any]
    ) -> None: ...

    def phase(self, text: str) -> None: ...

    def trial_finished(self, trial: FrozenTrial) -> None: ...

    def trial_skipped(self, trial: FrozenTrial) -> None: ...


def study_name(
    *, model: str, hardware_key: str, workload: str, objective: str, space: SearchSpace
) -> str:
    """Model + hardware + workload + objective, plus a short hash of the search space so that a
    re-ranged space starts a new study while the same command resumes the old one."""
    digest = hashlib.sha256(space.describe().encode()).hexdigest()[:6]
    return f"{model}@{hardware_key}@{workload}@{objective}@{digest}"


def storage_url(storage: str | None, *, state_dir: Path) -> str:
    """``--storage`` as given (any Optuna URL), else SQLite under the state directory."""
    if storage:
        return storage
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'studies.db').resolve()}"


def open_study(*, name: str, storage: str, seed: int | None) -> optuna.Study:
    """Create or resume a maximising study (TPE; infeasible trials carry a constraint)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=make_sampler(seed=seed),
            direction="maximize",
            load_if_exists=True,
        )
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as exc:
        url = redact_url(storage)
        raise UserError(f"cannot open study storage {url}: {redact_url(str(exc))}") from None
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise UserError(f"study {name!r} exists with other objectives; use another --storage")
    return study


def launches(study: optuna.Study) -> int:
    """Engine starts so far (interrupted trials do not count: they are re-run)."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("launched") and t.user_attrs.get("outcome") != INTERRUPTED
    )


def tell(study: optuna.Study, trial: optuna.Trial, result: TrialResult) -> None:
    """Map an outcome to Optuna: infeasible → COMPLETE + violated constraint + worst value;
    harness errors → FAIL (see optuna5.md)."""
    for key, value in result.attrs().items():
        trial.set_user_attr(key, value)
    if result.outcome is Outcome.OK:
        trial.set_constraint(CONSTRAINT, -1.0)
        study.tell(trial, result.throughput)
    elif result.outcome.infeasible:
        trial.set_constraint(CONSTRAINT, 1.0)
        study.tell(trial, 0.0)
    else:
        study.tell(trial, state=TrialState.FAIL)


@dataclass(frozen=True)
class StudyPlan:
    """What one ``tune`` run does to a study."""

    study: optuna.Study
    space: SearchSpace
    runner: TrialRunner
    budget: int
    log_dir: Path
    default_params: dict[str, Value]
    enqueue: tuple[dict[str, Value], ...] = ()
    timeout_s: float | None = None
    prescreen: Screen | None = None


def _enqueue_start(plan: StudyPlan) -> None:
    """vLLM's defaults first in a new study, then the user's own candidates (once each)."""
    if not plan.study.get_trials(deepcopy=False):
        plan.study.enqueue_trial(plan.default_params, user_attrs={"source": "vllm-defaults"})
    for params in plan.enqueue:
        plan.study.enqueue_trial(params, user_attrs={"source": "--enqueue"}, skip_if_exists=True)


def run_study(plan: StudyPlan, *, reporter: Reporter) -> None:
    """Ask, launch, tell until the launch budget or the timeout is spent. Resumable."""
    _enqueue_start(plan)
    prescreen = plan.prescreen
    if prescreen is not None:
        prescreen.learn_all((t.number, t.user_attrs) for t in plan.study.get_trials(deepcopy=False))
    started = time.monotonic()
    skipped = 0
    while (done := launches(plan.study)) < plan.budget:
        if plan.timeout_s is not None and time.monotonic() - started >= plan.timeout_s:
            break
        trial = plan.study.ask()
        params = plan.space.sample(trial)
        args = plan.space.args(params)
        why = prescreen.check(args) if prescreen is not None else None
        if why is not None:  # known to fail: recorded as infeasible, never launched
            trial.set_user_attr("vllm_args", dict(args))
            trial.set_user_attr("outcome", Outcome.SKIPPED.value)
            trial.set_user_attr("reason", why)
            trial.set_constraint(CONSTRAINT, 1.0)
            plan.study.tell(trial, 0.0)
            reporter.trial_skipped(plan.study.trials[trial.number])
            skipped += 1
            if skipped >= MAX_SKIPS_IN_A_ROW:
                break  # the sampler keeps proposing known failures: the space is exhausted
            continue
        skipped = 0
        trial.set_user_attr("launched", True)
        trial.set_user_attr("vllm_args", dict(args))
        predicted = prescreen.predict_kv_tokens(args) if prescreen is not None else None
        if predicted is not None:  # before the launch: compared with vLLM's number afterwards
            trial.set_user_attr("predicted_kv_cache_tokens", predicted)
        reporter.trial_started(number=trial.number, launch=done + 1, budget=plan.budget, args=args)
        log_path = plan.log_dir / f"trial-{trial.number:04d}.log"
        try:
            result = plan.runner.run(args=args, log_path=log_path, on_phase=reporter.phase)
        except UserError as exc:
            trial.set_user_attr("outcome", "stopped")
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("log", str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            raise
        except BaseException:
            # Ctrl-C / SIGTERM: the engine is already stopped; run this candidate again next time.
            trial.set_user_attr("outcome", INTERRUPTED)
            trial.set_user_attr("log", str(log_path))
            plan.study.tell(trial, state=TrialState.FAIL)
            plan.study.enqueue_trial(params, user_attrs={"source": f"retry of {trial.number}"})
            raise
        tell(plan.study, trial, result)
        if prescreen is not None:
            prescreen.learn_trial(trial=trial.number, attrs=result.attrs())
        reporter.trial_finished(plan.study.trials[trial.number])


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("outcome") == Outcome.OK.value and t.value is not None
    ]


def choose_best(
    study: optuna.Study, *, noise: float, most_images: bool = False
) -> FrozenTrial | None:
    """The best feasible trial; among results within ``noise`` of the top throughput, the one
    with the longest ``max_model_len`` (the context the application can use), then the fastest.
    ``most_images``: the largest image limit with a usable throughput (half the best or more)."""
    feasible = feasible_trials(study)
    if not feasible:
        return None
    top = max(t.value or 0.0 for t in feasible)
    if most_images:
        usable = [t for t in feasible if (t.value or 0.0) >= USABLE_SHARE * top]
        return max(usable, key=lambda t: (image_count(t.user_attrs["vllm_args"]) or 0, t.value))
    near = [t for t in feasible if (t.value or 0.0) >= top * (1.0 - noise)]
    return max(
        near,
        key=lambda t: (int(t.user_attrs["vllm_args"].get("max_model_len", 0)), t.value or 0.0),
    )


def find_studies(storage: str, *, model: str | None) -> list[str]:
    """Names of the studies in a storage, optionally for one model (newest last)."""
    summaries = optuna.get_all_study_summaries(storage=storage, include_best_trial=False)
    names = [s.study_name for s in summaries]
    return [n for n in names if model is None or n.split("@", 1)[0] == model]


def load_study(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def trial_rows(trials: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
    """One plain row per trial for tables and JSON."""
    rows = []
    for t in trials:
        attrs = t.user_attrs
        metrics = attrs.get("metrics") or {}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "outcome": attrs.get(
                    "outcome", "running" if t.state == TrialState.RUNNING else "-"
                ),
                "args": attrs.get("vllm_args") or t.params,
                "throughput": metrics.get("output_throughput"),
                "ttft_p95_ms": metrics.get("ttft_ms_p95"),
                "tpot_p95_ms": metrics.get("tpot_ms_p95"),
                "kv_cache_tokens": (attrs.get("startup") or {}).get("kv_cache_tokens"),
                "predicted_kv_cache_tokens": attrs.get("predicted_kv_cache_tokens"),
                "reason": attrs.get("reason", ""),
                "estimated_max_model_len": attrs.get("estimated_max_model_len"),
                "log": attrs.get("log", ""),
                "source": attrs.get("source", ""),
            }
        )
    return rows
