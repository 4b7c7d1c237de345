"""vLLM's own defaults for ``vllm serve``: what a launch without tuned flags runs with."""

from __future__ import annotations

from autotune.engine.multimodal import IMAGE_DIM
from autotune.hardware import Hardware
from autotune.model import ModelSpec
from autotune.units import GIB

Value = int | float  # a tuned setting's value


def vllm_defaults(hardware: Hardware, spec: ModelSpec) -> dict[str, Value]:
    """vLLM's defaults for ``vllm serve`` on this GPU (vllm-facts §2.1; 0.9 utilization as in 0.11,
    the lower of the two recent defaults)."""
    if hardware.is_cpu:  # vllm serve on the CPU backend; 4 GiB was VLLM_CPU_KVCACHE_SPACE's default
        cpu: dict[str, Value] = {
            IMAGE_DIM: 999,
            "kv_cache_memory_bytes": 4 * GIB,
            "max_num_seqs": 128,
            "max_num_batched_tokens": 2048,
        }
        if spec.max_position_embeddings:
            cpu["max_model_len"] = spec.max_position_embeddings
        return cpu
    if hardware.memory_gib >= 160:
        tokens, seqs = 16384, 1024
    elif hardware.memory_gib >= 70 and "a100" not in hardware.gpu_name.lower():
        tokens, seqs = 8192, 1024
    else:
        tokens, seqs = 2048, 256
    defaults: dict[str, Value] = {
        IMAGE_DIM: 999,  # vLLM's default image limit; clamped into the space
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
    }
    if spec.max_position_embeddings:
        defaults["max_model_len"] = spec.max_position_embeddings
    return defaults
