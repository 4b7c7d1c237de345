"""Parse what the user writes for a dimension (``V``, ``LOW:HIGH``, byte sizes, ``--enqueue``
candidates) and check it against the limits vLLM itself enforces."""

from __future__ import annotations

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM, LIMIT_ARG
from autotune.errors import UserError

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


def parse_number(name: str, text: str) -> Value:
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
        values = [parse_number(name, p) for p in parts]
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
