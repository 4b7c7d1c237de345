"""The KV cache of one token (vllm-facts §4): vLLM's KV dtype rule (``--kv-cache-dtype auto``
takes the checkpoint's own KV scheme, else the model dtype), bytes per layer and token, and the
block pool's layout in KV cache groups (sliding-window hybrids). Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass

from autotune.memory.arch import Architecture

# fmt: off
# Element sizes of vLLM's STR_DTYPE_TO_TORCH_DTYPE (vllm/utils/torch_utils.py).
KV_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1,
                  "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1, "int8": 1, "fp8_ds_mla": 1,
                  "nvfp4": 1, "nvfp4_ds_mla": 1, "int8_per_token_head": 1,
                  "fp8_per_token_head": 1}
# fmt: on


def resolve_kv_cache_dtype(*, arch: Architecture, kv_cache_dtype: str = "auto") -> str:
    """``auto`` → the checkpoint's own KV scheme if it declares one, else the model dtype."""
    if kv_cache_dtype != "auto":
        if kv_cache_dtype not in KV_DTYPE_BYTES:
            raise ValueError(f"KV cache dtype {kv_cache_dtype!r} is not modelled")
        return kv_cache_dtype
    return arch.checkpoint_kv_cache_dtype or arch.dtype


def kv_cache_dtype_bytes(*, arch: Architecture, kv_cache_dtype: str = "auto") -> int:
    """Bytes of one KV cache element (vLLM's element size; packed modes are handled by
    ``kv_bytes_per_layer_token``)."""
    return KV_DTYPE_BYTES[resolve_kv_cache_dtype(arch=arch, kv_cache_dtype=kv_cache_dtype)]


def kv_bytes_per_layer_token(
    *, arch: Architecture, tp: int = 1, kv_cache_dtype: str = "auto"
) -> int:
    """One token's KV bytes in one layer on one GPU (``AttentionSpec.page_size_bytes`` / block)."""
    dtype = resolve_kv_cache_dtype(arch=arch, kv_cache_dtype=kv_cache_dtype)
    size = KV_DTYPE_BYTES[dtype]
    if arch.mla is not None:  # one latent, K only, not sharded across TP (max_tp_shards=1)
        special = {"fp8_ds_mla": 656, "nvfp4_ds_mla": 352}
        return special.get(dtype) or (arch.mla.kv_lora_rank + arch.mla.qk_rope_head_dim) * size
    if dtype.endswith("_ds_mla"):
        raise ValueError(f"{dtype} needs an MLA model")
    # ModelConfig.get_num_kv_heads: KV heads split over TP ranks, replicated when TP > heads.
    heads = max(1, arch.num_kv_heads // tp)
    d = arch.head_dim
    if dtype.startswith("nvfp4"):  # fp4 data + one fp8 scale per 16, for K and for V
        return heads * 2 * (d // 2 + d // 16)
    per_token_head_scales = 2 * heads * 4 if dtype.endswith("per_token_head") else 0
    return heads * 2 * d * size + per_token_head_scales


@dataclass(frozen=True)
class KVLayout:
    """vLLM's KV block pool: bytes of one token slot (pool block bytes / block size) and the
    attention window of each KV cache group (None = full attention)."""

    bytes_per_token: int
    windows: tuple[int | None, ...]


def kv_layout(
    *,
    arch: Architecture,
    tp: int = 1,
    kv_cache_dtype: str = "auto",
    hybrid_kv_cache_manager: bool = True,
) -> KVLayout:
    """Group layers as ``get_kv_cache_groups`` does: one group when every layer has the same
    window; otherwise (hybrid manager on) each window type split into groups of ``group_size``
    layers (the smallest type's count, or the largest's when that is < 1.5x the smallest),
    and one pool block holds the largest group's pages (``_get_kv_cache_bytes_per_block``)."""
    per_layer = kv_bytes_per_layer_token(arch=arch, tp=tp, kv_cache_dtype=kv_cache_dtype)
    windows = arch.layer_windows or (None,) * arch.num_layers
    kinds = list(dict.fromkeys(windows))
    if len(kinds) == 1 or not hybrid_kv_cache_manager:  # disabled: SWA layers count as full
        return KVLayout(per_layer * len(windows), (kinds[0] if len(kinds) == 1 else None,))
    counts = [windows.count(k) for k in kinds]
    group_size = max(counts) if max(counts) < min(counts) * 1.5 else min(counts)
    groups = [(k, math.ceil(c / group_size), c) for k, c in zip(kinds, counts, strict=True)]
    widest = max(math.ceil(c / n) for _, n, c in groups)
    return KVLayout(per_layer * widest, tuple(k for k, n, _ in groups for _ in range(n)))


def kv_bytes_per_token(*, arch: Architecture, tp: int = 1, kv_cache_dtype: str = "auto") -> int:
    """KV bytes of one token slot per GPU: Σ over layers of 2·H_kv/TP·D·bytes (§4), MLA
    (kv_lora_rank + qk_rope_head_dim)·bytes per layer; for sliding/full hybrids the widest KV
    cache group only (the pool's block bytes / block size, hybrid KV cache manager on)."""
    return kv_layout(arch=arch, tp=tp, kv_cache_dtype=kv_cache_dtype).bytes_per_token
