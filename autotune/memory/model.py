"""Analytic GPU memory model of one vLLM engine (per GPU), without launching anything.

The budget (vllm-facts §1.2, vLLM 0.33.0 V1 engine)::

    requested = ceil(gpu_memory_utilization x total)          # fraction of TOTAL memory
    kv        = requested - weights - non_torch - peak_activation - cuda_graph_estimate
    blocks    = kv // (block_size x kv_bytes_per_token)        # §4, null block included

CUDA graphs are subtracted in 0.33 (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1``, the default
since 0.21); in 0.11 they came out of the ``1 - util`` headroom (``cuda_graphs_in_budget=False``).
Only ``requested`` depends on the utilization, so one boot predicts the KV cache at any
utilization for the same model, TP, batch and image settings (§1.3); the study learns from every
launch in ``autotune.search.screen`` (block geometry) and ``autotune.memory.calibration`` (non-KV
memory). What follows from ``config.json`` alone is in ``autotune.memory.arch``, ``kv`` and
``estimates`` (public names re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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
from autotune.units import GIB

# fmt: off
__all__ = [
    "Architecture", "KVLayout", "MemoryModel", "UnsupportedArchitecture",
    "architecture_from_config", "encoder_profile_bytes", "estimate_memory_model",
    "kv_bytes_per_token", "kv_cache_dtype_bytes", "kv_layout", "resolve_kv_cache_dtype",
    "total_bytes_of", "weight_bytes",
]
# fmt: on


@dataclass(frozen=True, kw_only=True)
class MemoryModel:
    """Per-GPU memory of one engine configuration (bytes). ``kv_bytes_per_token`` is one token
    slot of the block pool (``autotune.memory.kv.kv_bytes_per_token``); ``kv_windows`` has one
    entry per KV cache group (None: full attention, else its sliding window)."""

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
    ``autotune.memory.estimates``. All are rough placeholders that the launches' numbers
    correct (``autotune.memory.calibration``)."""
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
