"""What a checkpoint's own quantization config says about its KV cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.model import first_of


def checkpoint_kv_cache_dtype(q: Mapping[str, Any]) -> str | None:
    """What vLLM uses for ``--kv-cache-dtype auto`` from the checkpoint's own KV scheme:
    ModelOpt's ``kv_cache_quant_algo`` / ``kv_cache_scheme`` (``resolve_kv_cache_dtype_string``)
    and an llm-compressor ``kv_cache_scheme`` (the Attention layer sets ``fp8``)."""
    method = str(q.get("quant_method", "")).lower()
    if method.startswith("modelopt"):
        inner = q.get("quantization") or q
        algo = first_of(inner, "kv_cache_scheme", "kv_cache_quant_algo") or first_of(
            q, "kv_cache_scheme", "kv_cache_quant_algo"
        )
        if isinstance(algo, Mapping):
            if (
                algo.get("num_bits") == 8
                and algo.get("type") == "float"
                and not algo.get("dynamic")
            ):
                return "fp8_e4m3"
            return "nvfp4" if algo.get("num_bits") == 4 and algo.get("type") == "float" else None
        return {"fp8": "fp8_e4m3", "nvfp4": "nvfp4"}.get(str(algo).lower()) if algo else None
    if method == "compressed-tensors" and q.get("kv_cache_scheme") is not None:
        return "fp8"
    return None
