"""The analytic memory model of one study's engine before any launch: the memory-relevant flags
given after ``--``, the model built from ``config.json`` and the hardware, and the prior that
calibration starts from."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from autotune.hardware import Hardware
from autotune.memory.arch import Architecture, UnsupportedArchitecture
from autotune.memory.calibration import Prior
from autotune.memory.estimates import default_activation_bytes, encoder_profile_bytes
from autotune.memory.model import MemoryModel, architecture_from_config, estimate_memory_model
from autotune.model import ModelSpec
from autotune.units import GIB, MIB

CPU_BLOCK_SIZE = 128  # vLLM's CPU backend (observed: its KV cache is whole 128-token blocks)


@dataclass(frozen=True, kw_only=True)
class EngineFlags:
    """The memory-relevant vLLM flags given after ``--``."""

    tp: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    block_size: int | None = None
    eager: bool = False  # no CUDA graphs (--enforce-eager, -O0)


_FLAGS = {"--tensor-parallel-size": "tp", "-tp": "tp", "--dtype": "dtype",
          "--kv-cache-dtype": "kv_cache_dtype", "--block-size": "block_size",
          "-O": "level", "--optimization-level": "level"}  # fmt: skip


def engine_flags(extra: Sequence[str]) -> EngineFlags:
    """Parse ``--tensor-parallel-size/-tp``, ``--dtype``, ``--kv-cache-dtype``, ``--block-size``,
    ``--enforce-eager`` and ``-O0`` (the last one wins, as in vLLM)."""
    values: dict[str, str] = {}
    for i, arg in enumerate(extra):
        flag, eq, value = arg.partition("=")
        if flag in ("--enforce-eager", "-O0"):
            values["level"] = "0"
        elif flag in _FLAGS:
            values[_FLAGS[flag]] = value if eq else (extra[i + 1] if i + 1 < len(extra) else "")
    tp, block = values.get("tp", ""), values.get("block_size", "")
    return EngineFlags(
        tp=int(tp) if tp.isdigit() else 1,
        dtype=values.get("dtype", "auto"),
        kv_cache_dtype=values.get("kv_cache_dtype", "auto"),
        block_size=int(block) if block.isdigit() else None,
        eager=values.get("level") == "0",
    )


def base_model(
    *,
    spec: ModelSpec,
    hardware: Hardware,
    flags: EngineFlags,
    max_num_seqs: int = 1024,
    max_num_batched_tokens: int = 8192,
) -> tuple[MemoryModel, Architecture] | None:
    """The analytic model before any launch, its non-KV estimate at these batch settings (None:
    no ``config.json`` or an architecture the model cannot predict)."""
    if spec.path is None or not (spec.path / "config.json").is_file():
        return None
    try:
        config = json.loads((spec.path / "config.json").read_text())
        arch = architecture_from_config(config, dtype=flags.dtype)
        block = flags.block_size or (CPU_BLOCK_SIZE if hardware.is_cpu else 16)
        model = estimate_memory_model(
            arch=arch,
            total_bytes=round(hardware.memory_gib * GIB),
            tp=flags.tp,
            kv_cache_dtype=flags.kv_cache_dtype,
            model_dir=spec.path,
            enforce_eager=flags.eager,
            block_size=block,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
        )
    except (UnsupportedArchitecture, ValueError, KeyError, TypeError, OSError):
        return None
    return model, arch


def calibration_prior(
    base: MemoryModel, *, arch: Architecture, tp: int, weights: int | None
) -> Prior:
    """Coefficients per feature unit (``calibration._SCALE``) from the analytic estimate."""
    per_1024 = default_activation_bytes(
        arch=arch, tp=tp, max_num_batched_tokens=1024, max_num_seqs=0
    )
    sampler = default_activation_bytes(arch=arch, tp=tp, max_num_batched_tokens=64, max_num_seqs=64)
    sampler -= default_activation_bytes(arch=arch, tp=tp, max_num_batched_tokens=64, max_num_seqs=0)
    graph = 2 * (2 * MIB + arch.num_layers * 64 * 1024) * 16
    fixed = (weights if weights is not None else base.weights_bytes) + base.non_torch_bytes
    mean = (fixed, per_1024, sampler, encoder_profile_bytes(arch=arch, images=1), graph)
    sigma = (0.1 * fixed + GIB, *(m + 16 * MIB for m in mean[1:]))
    return Prior(mean=tuple(float(m) for m in mean), sigma=tuple(float(s) for s in sigma))


def seqs_cap(
    *, model: MemoryModel, memory_dim: str, memory_high: float, request_tokens: int
) -> int | None:
    """How many requests of ``request_tokens`` (whole blocks each) the KV cache can hold at the
    top of the memory range, at most: the budget minus 90% of the estimated weights (activation,
    CUDA graphs and non-torch memory taken as 0), or the KV bytes themselves. None when nothing
    fits (the cap would say nothing)."""
    if memory_dim == "kv_cache_memory_bytes":
        kv = int(memory_high)
    else:
        kv = math.ceil(memory_high * model.total_bytes) - int(0.9 * model.weights_bytes)
    per_request = model.blocks_per_request(request_tokens) * model.bytes_per_block
    return kv // per_request if kv > 0 and per_request > 0 and kv >= per_request else None
