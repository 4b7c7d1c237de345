"""Analytic GPU memory model of one vLLM engine (per GPU), without launching anything.

The budget (vllm-facts §1.2, vLLM 0.33.0 V1 engine)::

    requested = ceil(gpu_memory_utilization x total)          # fraction of TOTAL memory
    kv        = requested - weights - non_torch - peak_activation - cuda_graph_estimate
    blocks    = kv // (block_size x kv_bytes_per_token)        # §4, null block included

CUDA graphs are subtracted in 0.33 (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1``, the default
since 0.21); in 0.11 they came out of the ``1 - util`` headroom (``cuda_graphs_in_budget=False``).
Only ``requested`` depends on the utilization, so one boot (``calibrated``) predicts the KV cache at
any utilization for the same model, TP, batch and image settings (§1.3). What follows from
``config.json`` alone is in ``autotune.memory.arch``, ``memory_kv`` and ``memory_estimates``
(public names re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from autotune.hardware import Hardware
from autotune.memory.arch import Architecture, UnsupportedArchitecture, architecture_from_config
from autotune.memory.estimates import (
    default_activation_bytes,
    default_cuda_graph_bytes,
    encoder_profile_bytes,
    weight_bytes,
)
from autotune.memory.kv import (
    KVLayout,
    kv_bytes_per_token,
    kv_cache_dtype_bytes,
    kv_layout,
    resolve_kv_cache_dtype,
)

# fmt: off
__all__ = [
    "Architecture", "KVLayout", "MemoryModel", "StartupNumbers", "UnsupportedArchitecture",
    "architecture_from_config", "encoder_profile_bytes", "estimate_memory_model",
    "kv_bytes_per_token", "kv_cache_dtype_bytes", "kv_layout", "resolve_kv_cache_dtype",
    "total_bytes_of", "weight_bytes",
]
# fmt: on

GIB = 2**30


@dataclass(frozen=True, kw_only=True)
class StartupNumbers:
    """What one launch printed (§1.3), each field optional. Names follow ``outcome.StartupInfo``;
    the rest come from the "Free memory on device … Actual usage is …" breakdown line (0.33:
    consumed = weights + non-torch; 0.11 prints weights and non-torch separately)."""

    utilization: float | None = None  # the boot's --gpu-memory-utilization
    total_gib: float | None = None
    kv_cache_gib: float | None = None  # "Available KV cache memory: X GiB" (per GPU)
    kv_cache_tokens: int | None = None  # "GPU KV cache size: N tokens"
    max_concurrency: float | None = None
    concurrency_len: int | None = None
    weights_gib: float | None = None  # "Model loading took X GiB"
    consumed_gib: float | None = None  # weights + non-torch (0.33 breakdown)
    non_torch_gib: float | None = None  # 0.11 breakdown
    peak_activation_gib: float | None = None
    cuda_graph_gib: float | None = None
    profiled_images: int | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> StartupNumbers:
        """From ``StartupInfo.to_dict()`` or stored trial attributes (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})


def _gib(value: float | None, default: int = 0) -> int:
    return default if value is None else round(value * GIB)


@dataclass(frozen=True, kw_only=True)
class MemoryModel:
    """Per-GPU memory of one engine configuration (bytes). ``kv_bytes_per_token`` is one token
    slot of the block pool (``memory_arch.kv_bytes_per_token``); ``kv_windows`` has one entry per
    KV cache group (None: full attention, else its sliding window)."""

    total_bytes: int
    weights_bytes: int
    activation_peak_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_bytes_per_token: int
    block_size: int = 16
    kv_windows: tuple[int | None, ...] = (None,)
    max_num_batched_tokens: int = 8192
    concurrent_batches: int = 2  # vllm serve: async scheduling, PP=1 (max_concurrent_batches)
    cuda_graphs_in_budget: bool = True  # 0.33 default; False reproduces 0.11

    @property
    def bytes_per_block(self) -> int:
        return self.block_size * self.kv_bytes_per_token

    @property
    def non_kv_bytes(self) -> int:
        graphs = self.cuda_graph_bytes if self.cuda_graphs_in_budget else 0
        return self.weights_bytes + self.non_torch_bytes + self.activation_peak_bytes + graphs

    def kv_cache_bytes(self, *, utilization: float) -> int:
        """vLLM's "Available KV cache memory" (< 0: "No available memory for the cache blocks")."""
        return math.ceil(self.total_bytes * utilization) - self.non_kv_bytes

    def num_blocks(self, *, utilization: float) -> int:  # kv // block bytes (null block included)
        return max(0, self.kv_cache_bytes(utilization=utilization) // self.bytes_per_block)

    def kv_cache_tokens(self, *, utilization: float) -> int:
        """Token slots of the pool: whole blocks x block size (§9 "expected capacity")."""
        return self.num_blocks(utilization=utilization) * self.block_size

    def blocks_per_request(self, tokens: int) -> int:
        """Blocks one request of ``tokens`` holds at its peak, summed over KV cache groups:
        full attention ceil(n/bs); sliding window ceil(min(w - 1 + in_flight, n)/bs) + 1 with
        in_flight = concurrent_batches x max_num_batched_tokens (§4, SlidingWindowSpec)."""
        in_flight = self.concurrent_batches * self.max_num_batched_tokens
        return sum(
            -(-tokens // self.block_size)
            if w is None
            else -(-min(w - 1 + in_flight, tokens) // self.block_size) + 1
            for w in self.kv_windows
        )

    def fits(self, *, utilization: float, max_model_len: int) -> bool:
        """vLLM's P4 check: one null block held back, then one max_model_len request must fit."""
        usable = self.kv_cache_bytes(utilization=utilization) - self.bytes_per_block
        need = self.blocks_per_request(max_model_len) * self.bytes_per_block
        return usable > 0 and need <= usable

    def max_model_len_fit(self, *, utilization: float, limit: int | None = None) -> int:
        """Largest max_model_len that passes ``fits`` (0: not even one token), found by binary
        search up to ``limit`` like ``_estimate_max_model_len_from_groups``. Sliding-window-only
        layouts stop growing, so the answer is then ``limit`` (2**30 when not given)."""
        lo, hi = 0, limit if limit is not None else 2**30
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(utilization=utilization, max_model_len=mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def max_concurrency(self, *, utilization: float, request_tokens: int) -> float:
        """num_blocks / blocks per request: vLLM's logged "Maximum concurrency" (§4)."""
        need = self.blocks_per_request(request_tokens)
        return self.num_blocks(utilization=utilization) / need if need else math.inf

    def logged_kv_cache_tokens(self, *, utilization: float, max_model_len: int) -> int:
        """vLLM 0.33's "GPU KV cache size: N tokens": int(max concurrency x max_model_len) (§4)."""
        conc = self.max_concurrency(utilization=utilization, request_tokens=max_model_len)
        return int(conc * max_model_len)

    def utilization_for_tokens(self, tokens: int) -> float:
        """Smallest utilization whose pool holds ``tokens`` token slots (> 1: impossible); round
        it up to the grid the caller uses."""
        need = -(-tokens // self.block_size) * self.bytes_per_block + self.non_kv_bytes
        util = (need - 1) / self.total_bytes  # ceil(u x total) >= need ⇔ u x total > need - 1
        while math.ceil(self.total_bytes * util) < need:
            util = math.nextafter(util, math.inf)
        return util

    def calibrated(self, *, startup: StartupNumbers) -> MemoryModel:
        """A copy corrected with a boot's numbers. Components that were printed replace the
        estimates; then, when the boot's utilization and KV memory are known, the activation peak
        (then graphs, non-torch, weights, never below 0) absorbs the difference, so that the model
        reproduces that boot's KV memory exactly."""
        s = startup
        weights = _gib(s.weights_gib, self.weights_bytes)
        non_torch = _gib(s.non_torch_gib, self.non_torch_bytes)
        if s.consumed_gib is not None:
            non_torch = max(0, _gib(s.consumed_gib) - weights)
        model = replace(
            self,
            total_bytes=_gib(s.total_gib, self.total_bytes),
            weights_bytes=weights,
            non_torch_bytes=non_torch,
            activation_peak_bytes=_gib(s.peak_activation_gib, self.activation_peak_bytes),
            cuda_graph_bytes=_gib(s.cuda_graph_gib, self.cuda_graph_bytes),
        )
        kv = _gib(s.kv_cache_gib) if s.kv_cache_gib is not None else None
        if kv is None and s.kv_cache_tokens and self.kv_windows == (None,):
            kv = s.kv_cache_tokens * self.kv_bytes_per_token  # full attention: tokens = blocks x bs
        if kv is None or s.utilization is None:
            return model
        # The boot's KV line is the ground truth: the least known terms absorb the difference.
        excess = model.kv_cache_bytes(utilization=s.utilization) - kv
        names = ["activation_peak_bytes", "non_torch_bytes", "weights_bytes"]
        for name in names[:1] + ["cuda_graph_bytes"] * model.cuda_graphs_in_budget + names[1:]:
            value = getattr(model, name) + excess
            model, excess = replace(model, **{name: max(0, value)}), min(0, value)
        return model


def total_bytes_of(hardware: Hardware) -> int:
    """Memory of one GPU in bytes (vLLM sizes each TP rank's GPU on its own, §1.2)."""
    return round(hardware.memory_gib * GIB)


def estimate_memory_model(
    *,
    arch: Architecture,
    total_bytes: int,
    tp: int = 1,
    kv_cache_dtype: str = "auto",
    model_dir: Path | None = None,
    max_num_seqs: int = 1024,
    max_num_batched_tokens: int = 8192,
    enforce_eager: bool = False,
    profiled_images: int = 0,
    block_size: int = 16,
    hybrid_kv_cache_manager: bool = True,
    concurrent_batches: int = 2,
    cuda_graphs_in_budget: bool = True,
) -> MemoryModel:
    """A model before any boot. Defaults are vllm serve 0.33 on a 70+ GiB GPU (§2.1). Non-torch
    memory: 0.5 GiB (+0.5 GiB of NCCL buffers when TP > 1). Activation and CUDA graph estimates:
    ``memory_arch``. All are rough placeholders that the first boot's numbers replace
    (``MemoryModel.calibrated``)."""
    layout = kv_layout(
        arch=arch,
        tp=tp,
        kv_cache_dtype=kv_cache_dtype,
        hybrid_kv_cache_manager=hybrid_kv_cache_manager,
    )
    batch = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}
    peak = default_activation_bytes(arch=arch, tp=tp, **batch)
    peak += encoder_profile_bytes(arch=arch, images=profiled_images)
    return MemoryModel(
        total_bytes=total_bytes,
        weights_bytes=weight_bytes(arch=arch, model_dir=model_dir, tp=tp),
        activation_peak_bytes=peak,
        non_torch_bytes=(GIB if tp > 1 else GIB // 2),
        cuda_graph_bytes=0 if enforce_eager else default_cuda_graph_bytes(arch=arch, **batch),
        kv_bytes_per_token=layout.bytes_per_token,
        block_size=block_size,
        kv_windows=layout.windows,
        max_num_batched_tokens=max_num_batched_tokens,
        concurrent_batches=concurrent_batches,
        cuda_graphs_in_budget=cuda_graphs_in_budget,
    )
