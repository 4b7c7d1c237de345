"""What "best" means: the objective, SLOs, a throughput floor and a memory budget.

A ``Goal`` maps a trial's result to Optuna values (in its directions) and constraint values
(> 0 violated). No Optuna import here: ``study.py`` tells Optuna what the goal computes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from autotune.engine.outcome import StartupInfo
from autotune.errors import UserError
from autotune.search.space import SearchSpace

# --slo name → the metric it limits (milliseconds, a percentile of the measured requests).
SLO_METRICS = {
    "ttft_p95_ms": "ttft_ms_p95",
    "ttft_p99_ms": "ttft_ms_p99",
    "tpot_p95_ms": "tpot_ms_p95",
    "tpot_p99_ms": "tpot_ms_p99",
    "itl_p95_ms": "itl_ms_p95",
    "itl_p99_ms": "itl_ms_p99",
    "e2e_p95_ms": "e2e_ms_p95",
    "e2e_p99_ms": "e2e_ms_p99",
}
Direction = Literal["maximize", "minimize"]
Objective = Literal["throughput", "goodput", "memory", "pareto", "capacity"]
OBJECTIVES: tuple[Objective, ...] = get_args(Objective)
Statistic = Literal["worst", "median"]  # of a configuration's repeated measurements
INFEASIBLE = "infeasible"  # the configuration cannot serve (OOM, KV too small, crash, ...)
SLO = "slo"  # the worst relative excess over an SLO
FLOOR = "min_throughput"  # the relative shortfall below --min-throughput


def parse_slos(texts: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """``("ttft_p95_ms=500", ...)`` → ``(("ttft_p95_ms", 500.0), ...)``; one clear line if bad."""
    out: dict[str, float] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in SLO_METRICS:
            known = ", ".join(SLO_METRICS)
            raise UserError(f"--slo {text!r}: expected NAME=MILLISECONDS with NAME one of {known}")
        try:
            limit = float(value)
        except ValueError:
            raise UserError(f"--slo {text!r}: {value!r} is not a number of milliseconds") from None
        if not limit > 0:
            raise UserError(f"--slo {text!r}: the limit must be positive")
        out[name] = limit
    return tuple(sorted(out.items()))


def parse_budget(text: str | None, *, total_gib: float) -> float | None:
    """``--memory-budget 0.6`` (a share of the GPU) or ``18`` / ``18GiB`` (GiB) → a share."""
    if text is None:
        return None
    raw = text.strip().lower().removesuffix("gib").removesuffix("g").strip()
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"--memory-budget {text!r}: give a fraction (0.6) or GiB (18GiB)") from None
    share = value if value <= 1 else value / total_gib
    if not 0 < share <= 1:
        raise UserError(f"--memory-budget {text!r}: more than the GPU's {total_gib:g} GiB")
    return round(share, 4)


@dataclass(frozen=True)
class Goal:
    """The objective and the limits a configuration must meet."""

    kind: Objective = "throughput"
    slos: tuple[tuple[str, float], ...] = ()
    min_throughput: float | None = None
    memory_budget: float | None = None  # share of total GPU memory, never exceeded
    total_gib: float = 0.0  # GPU memory (worst value of a reservation)

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise UserError(f"--objective {self.kind}: choose one of {', '.join(OBJECTIVES)}")
        if self.kind == "memory" and self.min_throughput is None:
            raise UserError("--objective memory needs --min-throughput TOKENS_PER_S")
        if self.kind in ("goodput", "capacity") and not self.slos:
            raise UserError(f"--objective {self.kind} needs at least one --slo NAME=MS")

    @property
    def directions(self) -> tuple[Direction, ...]:
        if self.kind == "memory":
            return ("minimize",)
        if self.kind == "pareto":
            return ("maximize", "minimize")
        return ("maximize",)

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @property
    def constraint_keys(self) -> tuple[str, ...]:
        """Every trial sets the same keys (GPSampler needs it)."""
        return (INFEASIBLE,) + ((SLO,) if self.slos else ()) + ((FLOOR,) if self.floored else ())

    @property
    def floored(self) -> bool:
        return self.min_throughput is not None

    def name(self) -> str:
        """For study names: the objective and the limits that change what counts."""
        parts = [self.kind, *(f"{k}={v:g}" for k, v in self.slos)]
        if self.min_throughput is not None:
            parts.append(f"min{self.min_throughput:g}")
        if self.memory_budget is not None:
            parts.append(f"mem{self.memory_budget:g}")
        return "-".join(parts)

    def values(
        self,
        *,
        throughput: float,
        goodput: float | None,
        reserved_gib: float,
        capacity: float | None = None,
    ) -> list[float]:
        """The Optuna values of a measured configuration (``capacity``: requests/s within the
        SLOs, None when no rate met them)."""
        if self.kind == "goodput":
            return [goodput or 0.0]
        if self.kind == "capacity":
            return [capacity or 0.0]
        if self.kind == "memory":
            return [reserved_gib]
        if self.kind == "pareto":
            return [throughput, reserved_gib]
        return [throughput]

    def worst(self) -> list[float]:
        """Values of an infeasible trial: worst, but on the plots' scale (no inf)."""
        return [self.total_gib if d == "minimize" else 0.0 for d in self.directions]

    def constraints(
        self, metrics: Mapping[str, Any] | None, *, ok: bool, capacity: float | None = None
    ) -> dict[str, float]:
        """Constraint values (> 0 violated) for a trial; failures violate ``infeasible``; for
        ``capacity``, a configuration where no rate met the SLOs violates ``slo``."""
        out = {key: 1.0 for key in self.constraint_keys}
        if not ok or metrics is None:
            return out
        out[INFEASIBLE] = -1.0
        if self.slos:
            out[SLO] = max(
                float(metrics.get(SLO_METRICS[n], 0.0)) / lim - 1 for n, lim in self.slos
            )
            if self.kind == "capacity" and capacity is None:
                out[SLO] = max(out[SLO], 1.0)
        if self.min_throughput is not None:
            out[FLOOR] = 1 - float(metrics.get("output_throughput", 0.0)) / self.min_throughput
        return out

    def missed(self, metrics: Mapping[str, Any]) -> list[str]:
        """The SLOs and floor a measurement misses, as short texts."""
        out = [
            f"{n} {float(metrics.get(SLO_METRICS[n], 0.0)):.1f} > {lim:g}"
            for n, lim in self.slos
            if float(metrics.get(SLO_METRICS[n], 0.0)) > lim
        ]
        tput = float(metrics.get("output_throughput", 0.0))
        if self.min_throughput is not None and tput < self.min_throughput:
            out.append(f"output_throughput {tput:.1f} < {self.min_throughput:g}")
        return out

    def describe_limits(self) -> dict[str, Any]:
        """The profile's ``constraints``: what the chosen configuration was held to."""
        out: dict[str, Any] = {name: limit for name, limit in self.slos}
        if self.min_throughput is not None:
            out["min_throughput"] = self.min_throughput
        if self.memory_budget is not None:
            out["memory_budget"] = self.memory_budget
            out["memory_budget_gib"] = round(self.memory_budget * self.total_gib, 2)
        return out


def reserved_gib(
    args: Mapping[str, Any], startup: StartupInfo, *, total_gib: float
) -> tuple[float, str]:
    """GPU memory a configuration reserves, and where the number came from."""
    util, total = startup.utilization, startup.total_gib
    if util is not None and total is not None:
        return round(util * total, 2), "vLLM startup log (gpu_memory_utilization x total)"
    if "gpu_memory_utilization" in args:
        util = float(args["gpu_memory_utilization"])
        return round(util * total_gib, 2), "gpu_memory_utilization x GPU memory"
    kv = args.get("kv_cache_memory_bytes")
    parts = (startup.consumed_gib, startup.peak_activation_gib, startup.cuda_graph_gib)
    if isinstance(kv, int):
        known = sum(p for p in parts if p is not None)
        return round(kv / 2**30 + known, 2), "KV cache bytes + vLLM's startup breakdown"
    return round(0.9 * total_gib, 2), "vLLM's default utilization (0.9) x GPU memory"


def goal_from(
    *,
    objective: str,
    slos: tuple[str, ...],
    min_throughput: float | None,
    memory_budget: str | None,
    total_gib: float,
) -> Goal:
    """The goal from the command line's texts; one clear line for a bad combination."""
    if min_throughput is not None and not min_throughput > 0:
        raise UserError(f"--min-throughput {min_throughput}: give output tokens/s > 0")
    if objective not in OBJECTIVES:
        raise UserError(f"--objective {objective}: choose one of {', '.join(OBJECTIVES)}")
    return Goal(
        kind=objective,
        slos=parse_slos(slos),
        min_throughput=min_throughput,
        memory_budget=parse_budget(memory_budget, total_gib=total_gib),
        total_gib=total_gib,
    )


def apply_budget(
    space: SearchSpace, *, budget: float | None, total_gib: float, user_range: bool = False
) -> SearchSpace:
    """Re-range the memory dimension so that no candidate reserves more than the budget (a
    default range moves down whole; a range the user gave must fit)."""
    if budget is None:
        return space
    dims = []
    for dim in space.dims:
        if dim.name == "gpu_memory_utilization":
            high = min(float(dim.high), math.floor(budget * 100 + 1e-9) / 100)
            low = float(dim.low)
            if low > high and not user_range:
                low = max(0.05, round(high - (float(dim.high) - low), 2))
            if low > high:
                raise UserError(
                    f"--gpu-memory-utilization {dim.describe()} is above --memory-budget {budget:g}"
                )
            dim = replace(dim, low=low, high=high)
        elif dim.name == "kv_cache_memory_bytes":
            cap = int(budget * total_gib * 2**30)
            if int(dim.low) > cap and not user_range:
                dim = replace(dim, low=min(int(dim.low), cap // 2))
            if int(dim.low) > cap:
                raise UserError(
                    f"--kv-cache-memory-bytes {dim.describe()} is above --memory-budget {budget:g}"
                )
            dim = replace(dim, high=min(int(dim.high), cap))
        dims.append(dim)
    return replace(space, dims=tuple(dims))
