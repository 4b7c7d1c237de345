"""config.json sanity (the numbers and shapes the memory model reads, checked before any
arithmetic) and what a checkpoint's own quantization config says about its KV cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.errors import UserError
from autotune.model import CONFIG_LIMITS, check_config_numbers, first_of

# fmt: off
# Numbers read besides ``model.CONFIG_LIMITS``: integers in these ranges, checked first.
_SIZE, _DIM, _COUNT = (1, 1 << 24), (1, 1 << 16), (0, 1 << 16)
_TEXT_LIMITS = {**CONFIG_LIMITS, **dict.fromkeys(("kv_lora_rank", "q_lora_rank",
    "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "hidden_size_per_head",
    "num_attention_groups"), _DIM), **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner",
    "ffn_hidden_size", "moe_intermediate_size"), _SIZE), **dict.fromkeys(("n_routed_experts",
    "num_local_experts", "num_experts", "n_shared_experts", "num_experts_per_tok",
    "experts_per_token"), _COUNT), "shared_expert_intermediate_size": (0, 1 << 24),
    "first_k_dense_replace": (0, 10_000), "max_window_layers": (0, 10_000),
    "sliding_window": (0, 1 << 31), "sliding_window_pattern": (1, 10_000),
    "padded_vocab_size": (1, 1 << 26)}
_VISION_LIMITS = {**dict.fromkeys(("image_size", "patch_size"), _DIM), "hidden_size": (1, 1 << 20),
                  "num_hidden_layers": (1, 10_000), "intermediate_size": _SIZE}
# fmt: on
_WHERE = "config.json: quantization_config"


def check_quantization(q: object) -> None:
    """A checkpoint's ``quantization_config`` (None: there is none) has the shape and sane
    numbers the memory model reads; else one clear line."""
    if q is None:
        return
    if not isinstance(q, Mapping):
        raise UserError(f"{_WHERE} must be an object")
    check_config_numbers(q, {"bits": (1, 64), "group_size": (-1, 1 << 20)}, source=_WHERE)
    inner = q.get("quantization")
    if inner is not None and not isinstance(inner, Mapping):
        raise UserError(f"{_WHERE}.quantization must be an object")
    groups = q.get("config_groups")
    if groups is None:
        return
    if not isinstance(groups, Mapping) or not all(
        isinstance(g, Mapping) and isinstance(g.get("weights") or {}, Mapping)
        for g in groups.values()
    ):
        raise UserError(f"{_WHERE}.config_groups must be objects with 'weights' objects")
    for group in groups.values():
        weights = group.get("weights") or {}
        check_config_numbers(
            weights, {"num_bits": (1, 64), "group_size": (1, 1 << 20)}, source=_WHERE
        )


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


def check_config(config: Mapping[str, Any], text: Mapping[str, Any]) -> None:
    """config.json sanity before any arithmetic: one clear line for a broken or hostile file."""
    check_config_numbers(text, _TEXT_LIMITS, source="config.json")
    heads = first_of(text, "num_attention_heads", "n_head")
    hidden = first_of(text, "hidden_size", "n_embd", "d_model")
    given = first_of(text, "head_dim", "hidden_size_per_head")
    if heads and hidden and not given and hidden < heads:  # a head size of 0
        raise UserError(f"config.json: hidden_size {hidden} is smaller than the {heads} heads")
    check_config_numbers(config, {"mm_tokens_per_image": (1, 1 << 20)}, source="config.json")
    vision = config.get("vision_config")
    if vision is not None and not isinstance(vision, Mapping):
        raise UserError("config.json: vision_config must be an object")
    check_config_numbers(vision or {}, _VISION_LIMITS, source="config.json: vision_config")
    kinds = text.get("layer_types")
    if kinds is not None and not (
        isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
    ):
        raise UserError("config.json: layer_types must be a list of names")
    for q in (config.get("quantization_config"), text.get("quantization_config")):
        check_quantization(q)
