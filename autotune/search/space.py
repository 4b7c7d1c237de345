"""Search space: which vLLM arguments are tuned, over which ranges, and vLLM's own defaults.

Pure: no Optuna import. ``SearchSpace.sample`` takes anything with Optuna's ``suggest_int`` /
``suggest_float`` methods, so candidates are valid by construction
(``max_num_batched_tokens >= max_num_seqs``). A categorical dimension (``--tune``, see
``opt_in``) is sampled as the index of its choice, so every parameter stays a number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM, LIMIT_ARG, limit_arg
from autotune.errors import UserError
from autotune.search.ranges import parse_number
from autotune.units import GIB

UTIL_STEP = 0.01


class Suggester(Protocol):
    """The part of ``optuna.Trial`` that sampling needs."""

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@runtime_checkable
class Categorical(Protocol):
    """Optuna's ``suggest_categorical`` (a suggester without it draws an index as an integer)."""

    def suggest_categorical(self, name: str, choices: Sequence[int]) -> int: ...


Choice = str | bool  # a categorical dimension's vLLM value


@dataclass(frozen=True)
class Dim:
    """One vLLM argument: fixed to a value or searched between ``low`` and ``high``; a
    categorical one between the indexes of its ``choices`` (vLLM's default first)."""

    name: str
    low: Value
    high: Value
    is_float: bool = False
    log: bool = False
    arg: str | None = None  # vLLM's argument when it differs from the name
    choices: tuple[Choice, ...] = ()

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    @property
    def flag(self) -> str:
        return "--" + (self.arg or self.name).replace("_", "-")

    def clamp(self, value: Value) -> Value:
        """``value`` moved into ``[low, high]``."""
        v = min(max(value, self.low), self.high)
        return round(v, 2) if self.is_float else int(v)

    def value(self, index: Value) -> Choice:
        """A categorical dimension's vLLM value for a sampled index."""
        return self.choices[int(index)]

    def describe(self) -> str:
        if self.choices:
            return "|".join(
                str(self.value(i)).lower() for i in range(int(self.low), int(self.high) + 1)
            )
        return f"{self.low}" if self.fixed else f"{self.low}..{self.high}"


DEFAULT_RANGES: dict[str, tuple[Value, Value]] = {
    "gpu_memory_utilization": (0.70, 0.98),
    "max_num_seqs": (8, 1024),
    "max_num_batched_tokens": (512, 16384),
}
# vLLM's CPU backend sizes the KV cache in bytes; its batches are smaller.
CPU_RANGES: dict[str, tuple[Value, Value]] = {
    "kv_cache_memory_bytes": (256 << 20, 8 * GIB),
    "max_num_seqs": (4, 256),
    "max_num_batched_tokens": (256, 8192),
}
MEMORY_DIMS = ("gpu_memory_utilization", "kv_cache_memory_bytes")
TUNED = (*MEMORY_DIMS, "max_num_seqs", "max_num_batched_tokens", "max_model_len", IMAGE_DIM)


def memory_name(params: Mapping[str, object]) -> str | None:
    """The memory setting among a trial's parameters (utilization or KV bytes), if any."""
    return next((name for name in MEMORY_DIMS if name in params), None)


@dataclass(frozen=True)
class SearchSpace:
    """The tuned and fixed dimensions of a study."""

    dims: tuple[Dim, ...]
    image_size: tuple[int, int] | None = None  # size hints in limit_mm_per_prompt

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
            if dim.choices:
                indexes = list(range(int(low), int(high) + 1))
                params[dim.name] = (
                    trial.suggest_categorical(dim.name, indexes)
                    if isinstance(trial, Categorical)
                    else trial.suggest_int(dim.name, int(low), int(high))
                )
            elif dim.is_float:
                params[dim.name] = round(
                    trial.suggest_float(dim.name, float(low), float(high), step=UTIL_STEP), 2
                )
            else:
                params[dim.name] = trial.suggest_int(dim.name, int(low), int(high), log=dim.log)
        return params

    def args(self, params: Mapping[str, Value]) -> dict[str, Value | str]:
        """Every vLLM argument a candidate runs with: fixed values plus the sampled ones
        (categorical ones as their vLLM value: ``"fp8"``, ``True``)."""
        out: dict[str, Value] = {d.name: d.low for d in self.dims if d.fixed}
        out.update(params)
        args: dict[str, Value | str] = {
            d.name: d.value(out[d.name]) if d.choices else out[d.name]
            for d in self.dims
            if d.name in out
        }
        if IMAGE_DIM in args:
            args[LIMIT_ARG] = limit_arg(int(args.pop(IMAGE_DIM)), size=self.image_size)
        return args

    def default_params(self, defaults: Mapping[str, Value]) -> dict[str, Value]:
        """vLLM's defaults clamped into the space (for the first, enqueued trial); a
        categorical dimension's default is its first choice."""
        params = {d.name: d.clamp(defaults[d.name]) for d in self.tuned if d.name in defaults}
        params |= {d.name: d.low for d in self.tuned if d.choices}
        if "max_num_batched_tokens" in params:
            seqs = params.get("max_num_seqs", self["max_num_seqs"].low)
            params["max_num_batched_tokens"] = max(params["max_num_batched_tokens"], seqs)
        return params

    def describe(self) -> str:
        return ", ".join(f"{d.name}={d.describe()}" for d in self.dims)


def parse_candidate(space: SearchSpace, text: str) -> dict[str, Value]:
    """``--enqueue "max_num_seqs=64,kv_cache_memory_bytes=1G"``: a candidate to try first
    (e.g. the settings in production today); dimensions left out are sampled."""
    params: dict[str, Value] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or name not in space or space[name].fixed:
            tuned = ", ".join(d.name for d in space.tuned)
            raise UserError(f"--enqueue {text!r}: expected NAME=VALUE with NAME one of {tuned}")
        dim = space[name]
        if dim.choices:  # a categorical dimension: the index of the named choice
            named = [str(c).lower() for c in dim.choices]
            if value.strip().lower() not in named:
                raise UserError(f"--enqueue {text!r}: {name} is one of {dim.describe()}")
            params[name] = named.index(value.strip().lower())
            continue
        try:
            number = parse_number(name, value.strip())
        except ValueError:
            raise UserError(f"--enqueue {text!r}: {value!r} is not a number") from None
        if not dim.low <= number <= dim.high:
            raise UserError(f"--enqueue {text!r}: {name}={value} is outside {dim.describe()}")
        params[name] = number
    if params.get("max_num_batched_tokens", 1 << 62) < params.get("max_num_seqs", 0):
        raise UserError(f"--enqueue {text!r}: max_num_batched_tokens must be >= max_num_seqs")
    return params
