"""What the report shows of a study, apart from how it is drawn: every trial as a point
(feasible with its throughput, else its failure class), the tuned parameters, the best so far,
importances, the chosen trial."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autotune.masking import mask
from autotune.search import study_keys as keys
from autotune.trial.record import TrialRecord

MISSING = "autotune report needs plotly and matplotlib: pip install 'vllm-autotune[report]'"
MIN_FEASIBLE = 10  # fewer feasible trials: no parameter importances (too few to tell)
LOG_SPAN = 20.0  # a parameter whose range spans more than this is drawn on a log axis
UNITS = {"gpu_memory_utilization": "fraction of GPU memory", "kv_cache_memory_bytes": "bytes",
         "max_num_seqs": "sequences", "max_num_batched_tokens": "tokens per step",
         "max_model_len": "tokens", "image_limit": "images per prompt"}  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One trial as the charts see it."""

    number: int
    kind: str  # feasible | infeasible | failed | pending
    outcome: str  # "ok" or the failure class
    throughput: float | None
    params: dict[str, float]
    reason: str


@dataclass(frozen=True)
class Param:
    """A tuned parameter (its range is wider than one value)."""

    name: str
    low: float
    high: float
    log: bool
    label: str  # name (unit)


def default_output() -> Path:
    """``autotune-report.html`` in the current directory."""
    return Path("autotune-report.html")


def points(study: optuna.Study) -> list[Point]:
    """Every trial: feasible ones with their throughput, the others with their class."""
    out = []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        outcome = record.outcome or ""
        if t.state == TrialState.COMPLETE:
            violated = any(v > 0 for v in t.constraints.values())
            kind = "infeasible" if violated or outcome not in ("", "ok") else "feasible"
        else:
            kind = "failed" if t.state == TrialState.FAIL else "pending"
        outcome = outcome or ("ok" if kind == "feasible" else t.state.name.lower())
        tput = record.throughput or (t.values or [None])[0]
        tput = tput if kind == "feasible" else None
        params = {k: float(v) for k, v in t.params.items() if isinstance(v, (int, float))}
        reason = mask(record.reason)  # a study written before masking may hold a secret
        if outcome == "kv_too_small" and record.estimated_max_model_len:
            reason = f"KV cache fits max_model_len <= {record.estimated_max_model_len}; {reason}"
        out.append(Point(t.number, kind, outcome, tput, params, reason))
    return out


def tuned_params(study: optuna.Study) -> list[Param]:
    """Numeric parameters whose range (over all trials) is wider than one value."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if isinstance(dist, (IntDistribution, FloatDistribution)):
                lows[name] = min(lows.get(name, dist.low), dist.low)
                highs[name] = max(highs.get(name, dist.high), dist.high)
    spans = {n: highs[n] / lows[n] if lows[n] > 0 else 0.0 for n in lows if highs[n] > lows[n]}
    labels = {n: f"{n} ({UNITS[n]})" if n in UNITS else n for n in spans}
    return [Param(n, lows[n], highs[n], spans[n] > LOG_SPAN, labels[n]) for n in spans]


def best_so_far(pts: list[Point], *, maximize: bool = True) -> list[tuple[int, float]]:
    """The best feasible throughput after each feasible trial."""
    good = [(p.number, p.throughput) for p in pts if p.throughput is not None]
    best = itertools.accumulate((v for _, v in good), max if maximize else min)
    return list(zip((n for n, _ in good), best, strict=True))


@dataclass(frozen=True)
class Importances:
    """Parameter importances over the feasible trials, or why there are none."""

    values: dict[str, float]  # parameter → importance; empty: no chart, ``note`` says why
    trials: int  # the feasible trials they were computed over
    constant: tuple[str, ...]  # tuned parameters that never varied over them (left out)
    note: str  # the caveat instead of the chart, or what the chart leaves out

    @property
    def title(self) -> str:
        return f"Parameter importances over {self.trials} feasible trials (PED-ANOVA)"


def importances(study: optuna.Study) -> Importances:
    """PED-ANOVA importances (Optuna's default; fANOVA would need scikit-learn) over the
    feasible trials, only with ``MIN_FEASIBLE`` of them and only for the parameters that took
    more than one value among them (a constant parameter cannot matter)."""
    feasible = [study.trials[p.number] for p in points(study) if p.kind == "feasible"]
    n = len(feasible)
    if n < MIN_FEASIBLE:
        why = f"parameter importances need {MIN_FEASIBLE} feasible trials ({n}): too few to tell"
        return Importances({}, n, (), why)
    seen: dict[str, set[object]] = {}
    for t in feasible:
        for name, value in t.params.items():
            seen.setdefault(name, set()).add(value)
    varied = sorted(name for name, values in seen.items() if len(values) > 1)
    constant = tuple(sorted(set(seen) - set(varied)))
    left_out = f"; not shown, never varied: {', '.join(constant)}" if constant else ""
    if not varied:
        why = f"no tuned parameter varied over the {n} feasible trials: no importances"
        return Importances({}, n, constant, why)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    only = optuna.create_study(directions=study.directions)
    only.add_trials(feasible)
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    target = (lambda t: sign * t.values[0]) if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():  # PED-ANOVA warns on any target; ours is signed
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(only, params=varied, target=target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return Importances({}, n, constant, f"parameter importances unavailable: {exc}")
    return Importances(dict(found), n, constant, f"over {n} feasible trials{left_out}")


def chosen(study: optuna.Study) -> int | None:
    number = study.user_attrs.get(keys.CHOSEN)
    return number if isinstance(number, int) else None


def tick(value: float, _pos: object = None) -> str:
    """Tick labels: 512, 1k, 128k, 256M, 8G (powers of two in 1024s), 5000, 15k, 1.5M, 0.85."""
    binary = value >= 1024 and value % 1024 == 0
    for power, suffix in ((3, "G"), (2, "M"), (1, "k")):
        size = (1024 if binary else 1000) ** power
        if abs(value) >= size and (binary or power > 1 or abs(value) >= 10 * size):
            return f"{value / size:.4g}{suffix}"
    return f"{value:g}"
