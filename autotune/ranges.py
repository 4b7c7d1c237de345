"""Parse what the user writes for a dimension (``V``, ``LOW:HIGH``, byte sizes, ``--enqueue``
candidates) and check it against the limits vLLM itself enforces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autotune.errors import UserError
from autotune.multimodal import IMAGE_DIM, LIMIT_ARG

if TYPE_CHECKING:
    from autotune.space import SearchSpace

Value = int | float

# Limits that vLLM itself enforces; ranges outside them are rejected before any launch.
_LIMITS: dict[str, tuple[Value, Value]] = {
    "gpu_memory_utilization": (0.01, 1.0),
    "kv_cache_memory_bytes": (1 << 20, 1 << 50),
    "max_num_seqs": (1, 1 << 20),
    "max_num_batched_tokens": (1, 1 << 24),
    "max_model_len": (16, 1 << 24),
    IMAGE_DIM: (0, 999),
}

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _number(name: str, text: str) -> Value:
    if name == "gpu_memory_utilization":
        return float(text)
    if name == "kv_cache_memory_bytes":
        t = text.strip().upper().removesuffix("IB").removesuffix("B")
        unit = t[-1:] if t[-1:] in _SUFFIX else ""
        return int(float(t[: len(t) - len(unit)]) * _SUFFIX[unit])
    return int(text)


def parse_range(name: str, text: str) -> tuple[Value, Value]:
    """``"8192"`` fixes a dimension; ``"8:256"`` re-ranges it. Checked against vLLM's limits.
    Byte sizes accept K/M/G suffixes (``512M:4G``)."""
    is_float = name == "gpu_memory_utilization"
    parts = text.split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        values = [_number(name, p) for p in parts]
    except ValueError:
        kind = "a number" if is_float else "an integer"
        flag = "--" + (LIMIT_ARG if name == IMAGE_DIM else name).replace("_", "-")
        raise UserError(f"{flag} {text!r}: expected {kind} or a range LOW:HIGH") from None
    low, high = values[0], values[-1]
    lo_lim, hi_lim = _LIMITS[name]
    flag = "--" + (LIMIT_ARG if name == IMAGE_DIM else name).replace("_", "-")
    if low > high:
        raise UserError(f"{flag} {text}: the low end is above the high end")
    if low < lo_lim or high > hi_lim:
        raise UserError(f"{flag} {text}: outside vLLM's limits ({lo_lim}..{hi_lim})")
    return low, high


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
            number = _number(name, value.strip())
        except ValueError:
            raise UserError(f"--enqueue {text!r}: {value!r} is not a number") from None
        if not dim.low <= number <= dim.high:
            raise UserError(f"--enqueue {text!r}: {name}={value} is outside {dim.describe()}")
        params[name] = number
    if params.get("max_num_batched_tokens", 1 << 62) < params.get("max_num_seqs", 0):
        raise UserError(f"--enqueue {text!r}: max_num_batched_tokens must be >= max_num_seqs")
    return params
