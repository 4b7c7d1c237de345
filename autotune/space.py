"""Search space: which vLLM arguments are tuned, over which ranges, and vLLM's own defaults.

Pure: no Optuna import. ``SearchSpace.sample`` takes anything with Optuna's ``suggest_int`` /
``suggest_float`` methods, so candidates are valid by construction
(``max_num_batched_tokens >= max_num_seqs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.model import ModelSpec

Value = int | float
UTIL_STEP = 0.01


class Suggester(Protocol):
    """The part of ``optuna.Trial`` that sampling needs."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@dataclass(frozen=True)
class Dim:
    """One vLLM argument: fixed to a value or searched between ``low`` and ``high``."""

    name: str
    low: Value
    high: Value
    is_float: bool = False
    log: bool = False

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def clamp(self, value: Value) -> Value:
        v = min(max(value, self.low), self.high)
        return round(v, 2) if self.is_float else int(v)

    def describe(self) -> str:
        return f"{self.low}" if self.fixed else f"{self.low}..{self.high}"


# Limits that vLLM itself enforces; ranges outside them are rejected before any launch.
_LIMITS: dict[str, tuple[Value, Value]] = {
    "gpu_memory_utilization": (0.01, 1.0),
    "max_num_seqs": (1, 1 << 20),
    "max_num_batched_tokens": (1, 1 << 24),
    "max_model_len": (16, 1 << 24),
}

DEFAULT_RANGES: dict[str, tuple[Value, Value]] = {
    "gpu_memory_utilization": (0.70, 0.98),
    "max_num_seqs": (8, 1024),
    "max_num_batched_tokens": (512, 16384),
}
TUNED = ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_model_len")


def parse_range(name: str, text: str) -> tuple[Value, Value]:
    """``"8192"`` fixes a dimension; ``"8:256"`` re-ranges it. Checked against vLLM's limits."""
    is_float = name == "gpu_memory_utilization"
    parts = text.split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        values = [float(p) if is_float else int(p) for p in parts]
    except ValueError:
        kind = "a number" if is_float else "an integer"
        raise UserError(
            f"--{name.replace('_', '-')} {text!r}: expected {kind} or a range LOW:HIGH"
        ) from None
    low, high = values[0], values[-1]
    lo_lim, hi_lim = _LIMITS[name]
    flag = "--" + name.replace("_", "-")
    if low > high:
        raise UserError(f"{flag} {text}: the low end is above the high end")
    if low < lo_lim or high > hi_lim:
        raise UserError(f"{flag} {text}: outside vLLM's limits ({lo_lim}..{hi_lim})")
    return low, high


def vllm_defaults(hardware: Hardware, spec: ModelSpec) -> dict[str, Value]:
    """vLLM's defaults for ``vllm serve`` on this GPU (vllm-facts §2.1; 0.9 utilization as in 0.11,
    the lower of the two recent defaults)."""
    if hardware.memory_gib >= 160:
        tokens, seqs = 16384, 1024
    elif hardware.memory_gib >= 70 and "a100" not in hardware.gpu_name.lower():
        tokens, seqs = 8192, 1024
    else:
        tokens, seqs = 2048, 256
    defaults: dict[str, Value] = {
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
    }
    if spec.max_position_embeddings:
        defaults["max_model_len"] = spec.max_position_embeddings
    return defaults


@dataclass(frozen=True)
class SearchSpace:
    """The tuned and fixed dimensions of a study."""

    dims: tuple[Dim, ...]

    def __getitem__(self, name: str) -> Dim:
        for dim in self.dims:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(d.name == name for d in self.dims)

    @property
    def tuned(self) -> tuple[Dim, ...]:
        return tuple(d for d in self.dims if not d.fixed)

    def sample(self, trial: Suggester) -> dict[str, Value]:
        """Draw a candidate; fixed dimensions are not asked of the sampler."""
        params: dict[str, Value] = {}
        for dim in self.dims:
            if dim.fixed:
                continue
            low, high = dim.low, dim.high
            if dim.name == "max_num_batched_tokens" and "max_num_seqs" in self:
                seqs = params.get("max_num_seqs", self["max_num_seqs"].low)
                low = max(low, seqs)
            if dim.is_float:
                params[dim.name] = round(
                    trial.suggest_float(dim.name, float(low), float(high), step=UTIL_STEP), 2
                )
            else:
                params[dim.name] = trial.suggest_int(dim.name, int(low), int(high), log=dim.log)
        return params

    def args(self, params: Mapping[str, Value]) -> dict[str, Value]:
        """Every vLLM argument a candidate runs with: fixed values plus the sampled ones."""
        out: dict[str, Value] = {d.name: d.low for d in self.dims if d.fixed}
        out.update(params)
        return {d.name: out[d.name] for d in self.dims if d.name in out}

    def default_params(self, defaults: Mapping[str, Value]) -> dict[str, Value]:
        """vLLM's defaults clamped into the space (for the first, enqueued trial)."""
        params = {d.name: d.clamp(defaults[d.name]) for d in self.tuned if d.name in defaults}
        if "max_num_batched_tokens" in params:
            seqs = self.args(params).get("max_num_seqs", 1)
            params["max_num_batched_tokens"] = max(params["max_num_batched_tokens"], seqs)
        return params

    def describe(self) -> str:
        return ", ".join(f"{d.name}={d.describe()}" for d in self.dims)


def build_space(
    *,
    spec: ModelSpec,
    overrides: Mapping[str, str | None],
    min_model_len: int | None = None,
) -> SearchSpace:
    """The default ranges, re-ranged or fixed by the user's ``--flag LOW:HIGH`` / ``--flag V``."""
    dims: list[Dim] = []
    for name in TUNED:
        text = overrides.get(name)
        if text is not None:
            low, high = parse_range(name, text)
        elif name == "max_model_len":
            model_max = spec.max_position_embeddings
            if model_max is None:
                continue  # unknown model: leave the length to vLLM, and say so elsewhere
            low = min(min_model_len or min(4096, model_max), model_max)
            high = model_max
        else:
            low, high = DEFAULT_RANGES[name]
        is_float = name == "gpu_memory_utilization"
        dims.append(Dim(name=name, low=low, high=high, is_float=is_float, log=not is_float))
    space = SearchSpace(dims=tuple(dims))
    return _check(space, spec=spec, min_model_len=min_model_len)


def _check(space: SearchSpace, *, spec: ModelSpec, min_model_len: int | None) -> SearchSpace:
    model_max = spec.max_position_embeddings
    if "max_model_len" in space and model_max is not None:
        dim = space["max_model_len"]
        if dim.high > model_max:
            raise UserError(
                f"--max-model-len {dim.describe()}: above the model's maximum "
                f"({model_max} from max_position_embeddings in config.json)"
            )
    if min_model_len is not None and model_max is not None and min_model_len > model_max:
        raise UserError(f"--min-model-len {min_model_len}: above the model's maximum {model_max}")
    if "max_num_seqs" in space and "max_num_batched_tokens" in space:
        seqs, tokens = space["max_num_seqs"], space["max_num_batched_tokens"]
        if seqs.low > tokens.high:
            raise UserError(
                f"--max-num-seqs {seqs.describe()} needs --max-num-batched-tokens of at least "
                f"{seqs.low} (vLLM requires max_num_batched_tokens >= max_num_seqs)"
            )
        if seqs.high > tokens.high:  # keep every candidate valid
            dims = tuple(replace(d, high=tokens.high) if d is seqs else d for d in space.dims)
            space = SearchSpace(dims=dims)
    return space
