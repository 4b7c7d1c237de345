"""``autotune plan``: what the analytic memory model says about a model on a GPU, before any
launch and without one: weights, KV bytes per token, and per memory setting the KV cache tokens,
the longest ``max_model_len`` that fits and the concurrency.

Rows: ``gpu_memory_utilization`` 0.50 to 0.95 in steps of 0.05 plus vLLM's defaults 0.90 (0.11)
and 0.92 (0.33); on the CPU backend, KV cache bytes (``--kv-cache-memory-bytes``) from 256 MiB
doubling up to 8 GiB or a quarter of the memory. Non-KV memory is the uncalibrated estimate at
vLLM's default batch settings for this hardware (a study calibrates it from its launches)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from autotune.engine.defaults import vllm_defaults
from autotune.engine.launcher import engine_version, resolve_command
from autotune.errors import UserError
from autotune.hardware import ENV_GPU, Backend, Hardware, choose_device
from autotune.memory.kv import resolve_kv_cache_dtype
from autotune.memory.model import MemoryModel
from autotune.memory.setup import base_model, engine_flags
from autotune.model import ModelSpec
from autotune.units import GIB, MIB

UTILIZATIONS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.95)


@dataclass(frozen=True, kw_only=True)
class Row:
    """One memory setting; ``max_concurrency`` is for requests of the plan's ``request_len``.
    ``fits``: false when the setting leaves no KV cache for one block (the weights and the
    non-KV memory take it all): then every number is 0, never negative."""

    gpu_memory_utilization: float | None
    kv_cache_memory_bytes: int | None
    kv_cache_bytes: int
    kv_cache_tokens: int
    max_model_len_fit: int
    max_concurrency: float
    fits: bool


def _kv_settings(model: MemoryModel, hardware: Hardware) -> list[tuple[float | None, int]]:
    if not hardware.is_cpu:
        return [(u, model.kv_cache_bytes(utilization=u)) for u in UTILIZATIONS]
    top, size = min(8 * GIB, int(hardware.memory_gib * GIB / 4)), 256 * MIB
    out: list[tuple[float | None, int]] = []
    while size <= top:
        out.append((None, size))
        size *= 2
    return out


def plan(
    *, spec: ModelSpec, hardware: Hardware, extra_args: Sequence[str] = (),
    request_len: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The plan as plain data (the ``--json`` output)."""
    flags = engine_flags(extra_args)
    defaults = vllm_defaults(hardware, spec)  # non-KV memory at vLLM's default batch settings
    seqs, tokens = int(defaults["max_num_seqs"]), int(defaults["max_num_batched_tokens"])
    found = base_model(
        spec=spec, hardware=hardware, flags=flags, max_num_seqs=seqs, max_num_batched_tokens=tokens
    )
    if found is None:
        raise UserError(
            f"{spec.model_id}: no config.json here, or an architecture the memory model cannot "
            "predict (hybrid/recurrent/encoder-decoder)"
        )
    model, arch = found
    limit = spec.max_position_embeddings
    length = request_len or limit or 4096
    rows = []
    for util, kv in _kv_settings(model, hardware):
        blocks = max(0, kv // model.bytes_per_block)
        need = model.blocks_per_request(length)
        fit = _fit(model, kv - model.bytes_per_block, limit)
        fits = blocks > 0 and fit > 0
        rows.append(
            Row(
                gpu_memory_utilization=util,
                kv_cache_memory_bytes=None if util is not None else kv,
                kv_cache_bytes=max(kv, 0) if fits else 0,
                kv_cache_tokens=blocks * model.block_size if fits else 0,
                max_model_len_fit=fit if fits else 0,
                max_concurrency=(round(blocks / need, 2) if need else math.inf) if fits else 0.0,
                fits=fits,
            )
        )
    return {
        "model": spec.model_id,
        "hardware": hardware.describe(),
        "weights_bytes": model.weights_bytes,
        "kv_bytes_per_token": model.kv_bytes_per_token,
        "kv_cache_dtype": resolve_kv_cache_dtype(arch=arch, kv_cache_dtype=flags.kv_cache_dtype),
        "block_size": model.block_size,
        "tensor_parallel_size": flags.tp,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
        "activation_bytes": None if hardware.is_cpu else model.activation_peak_bytes,
        "cuda_graph_bytes": None if hardware.is_cpu else model.cuda_graph_bytes,
        "non_torch_bytes": None if hardware.is_cpu else model.non_torch_bytes,
        "request_len": length,
        "calibrated": False,
        "rows": [asdict(r) for r in rows],
    }


def _fit(model: MemoryModel, usable: int, limit: int | None) -> int:
    """Longest max_model_len whose request fits in ``usable`` bytes (vLLM's P4 check), capped
    at the model's maximum."""
    lo, hi = 0, limit or 2**30
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if usable > 0 and model.blocks_per_request(mid) * model.bytes_per_block <= usable:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _size(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _backend(*, device: str, gpu: str | None, vllm_cmd: str | None) -> Backend:
    """``--device auto`` as every command decides it: cpu when the vLLM that would be launched
    is a CPU build (asked without launching it; not installed here: gpu)."""
    version = None
    if device == "auto" and not gpu and not os.environ.get(ENV_GPU):
        try:
            version = engine_version(resolve_command(vllm_cmd))
        except UserError:
            version = None
    return choose_device(device=device, gpu=gpu, engine_version=version)


def run(
    *, model: str, gpu: str | None, device: str, extra_args: Sequence[str],
    request_len: int | None, as_json: bool, vllm_cmd: str | None = None,
) -> None:  # fmt: skip
    """``autotune plan``: resolve the model and hardware, print the plan."""
    from autotune.hardware import resolve_hardware
    from autotune.model import resolve_model

    data = plan(
        spec=resolve_model(model),
        hardware=resolve_hardware(
            gpu=gpu, device=_backend(device=device, gpu=gpu, vllm_cmd=vllm_cmd)
        ),
        extra_args=extra_args,
        request_len=request_len,
    )
    print_plan(data, as_json=as_json)


def print_plan(data: dict[str, Any], *, as_json: bool) -> None:
    """The plan as JSON, or a header and a table."""
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return
    from rich.console import Console
    from rich.table import Table

    head = (
        f"{data['model']} on {data['hardware']}\n"
        f"weights {_size(data['weights_bytes'])} ({data['weights_bytes'] / 1e9:.2f} GB), "
        f"KV cache {data['kv_bytes_per_token']:,} bytes "
        f"per token ({data['kv_cache_dtype']}, blocks of {data['block_size']} tokens, TP "
        f"{data['tensor_parallel_size']})"
    )
    if data["activation_bytes"] is not None:
        head += (
            f"\nestimated at vLLM's defaults (max_num_seqs {data['max_num_seqs']}, "
            f"max_num_batched_tokens {data['max_num_batched_tokens']}): peak activation "
            f"{_size(data['activation_bytes'])}, CUDA graphs {_size(data['cuda_graph_bytes'])}, "
            f"non-torch {_size(data['non_torch_bytes'])}; uncalibrated (a study measures them)"
        )
    table = Table(title_justify="left")
    first = "utilization" if data["rows"] and data["rows"][0]["gpu_memory_utilization"] else "KV"
    for col in (first, "KV cache", "KV tokens", "max_model_len fits",
                f"concurrency @ {data['request_len']:,}"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in data["rows"]:
        util = r["gpu_memory_utilization"]
        setting = f"{util:.2f}" if util is not None else _size(r["kv_cache_memory_bytes"])
        if not r.get("fits", True):  # the weights and non-KV memory leave no KV cache
            table.add_row(setting, "does not fit", "-", "-", "-")
            continue
        table.add_row(
            setting,
            _size(r["kv_cache_bytes"]),
            f"{r['kv_cache_tokens']:,}",
            f"{r['max_model_len_fit']:,}",
            f"{r['max_concurrency']:.2f}x",
        )
    console = Console() if Console().is_terminal else Console(width=120)
    console.print(head, markup=False)  # the model is the user's text, never rich markup
    console.print(table)
