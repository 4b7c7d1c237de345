"""Everything ``config.json`` alone says about a model's shape, read the way vLLM reads it:
layers, KV heads, head size, sliding windows, MLA, MoE, quantization, dtype and the checkpoint's
own KV cache scheme. Pure; no torch, no files. The per-token KV formula is in
``autotune.memory.kv``; parameter counts and pre-calibration heuristics in
``autotune.memory.estimates``.

Multimodal wrappers (LLaVA, Gemma 3, ...) keep the language model in ``text_config``, which is often
partial: transformers fills the missing fields from the text model's config class defaults, and so
do we (``_TEXT_DEFAULTS``: LlamaConfig, MistralConfig, Qwen2Config, Gemma*Config). A wrapper whose
``text_config`` has no ``model_type`` gets its default text model (LLaVA → llama, Gemma 3 →
gemma3_text); a missing ``vision_config`` field takes the CLIP/SigLIP (LLaVA: CLIP-L/336) default.
Top-level fields fill in what the text config lacks (dtype, quantization_config).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autotune.memory.checkpoint import check_config, checkpoint_kv_cache_dtype
from autotune.model import DTYPE_BYTES, first_of


class UnsupportedArchitecture(NotImplementedError):
    """The memory model cannot predict this architecture; callers skip predictions."""


# Tables below: transformers' config-class defaults and vLLM's names; kept compact.
# fmt: off
_LLAMA = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
          "num_attention_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048,
          "tie_word_embeddings": False}
_GEMMA = {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
          "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
          "vocab_size": 256000, "max_position_embeddings": 8192, "tie_word_embeddings": True}
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": _LLAMA,
    "mistral": {**_LLAMA, "intermediate_size": 14336, "num_key_value_heads": 8,
                "max_position_embeddings": 131072, "sliding_window": 4096},
    "qwen2": {**_LLAMA, "intermediate_size": 22016, "vocab_size": 151936,
              "max_position_embeddings": 32768, "use_sliding_window": False},
    "gemma": {**_GEMMA, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 16},
    "gemma2": {**_GEMMA, "sliding_window": 4096},
    "gemma3_text": {**_GEMMA, "vocab_size": 262208, "max_position_embeddings": 131072,
                    "sliding_window": 4096, "sliding_window_pattern": 6},
}
_WRAPPER_TEXT = {"llava": "llama", "llava_next": "llama", "vipllava": "llama",
                 "llava_onevision": "qwen2", "gemma3": "gemma3_text", "paligemma": "gemma",
                 "mistral3": "mistral"}
_CLIP = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
         "image_size": 224, "patch_size": 32}
_LLAVA_CLIP = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
               "image_size": 336, "patch_size": 14}  # LlavaConfig's default vision_config
_VISION_DEFAULTS = {"clip_vision_model": _CLIP, "siglip_vision_model": {**_CLIP, "patch_size": 16}}
_MLA_TYPES = {"deepseek_v2", "deepseek_v3", "deepseek_mtp", "kimi_k2", "longcat_flash",
              "pangu_ultra_moe"}
# Mamba/linear-attention hybrids, recurrent, cross-attention, chunked-local, KV-sharing and
# sparse-indexer models: their KV cache has parts §4 gives no formula for.
_UNSUPPORTED_TYPES = {
    "jamba", "mamba", "mamba2", "falcon_mamba", "falcon_h1", "bamba", "nemotron_h", "zamba",
    "zamba2", "qwen3_next", "granitemoehybrid", "plamo2", "minimax", "minimax_text_01",
    "minimax_m1", "lfm2", "lfm2_moe", "kimi_linear", "rwkv", "recurrent_gemma", "gemma3n",
    "mllama", "llama4", "llama4_text", "deepseek_v32"}
_KV_HEAD_KEYS = ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num",
                 "num_attention_groups")
_NON_GATED = {"opt", "gpt2", "gpt_neox", "gpt_bigcode", "gptj", "phi", "bloom", "falcon",
              "starcoder2"}
_TIED = {"gemma", "gemma2", "gemma3_text", "opt", "gpt2"}  # tie_word_embeddings default True
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "fp16": "float16", "bf16": "bfloat16"}
# fmt: on


@dataclass(frozen=True, kw_only=True)
class MLA:
    """DeepSeek-style multi-head latent attention (one compressed latent per token per layer)."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None


@dataclass(frozen=True, kw_only=True)
class MoE:
    num_experts: int
    expert_intermediate: int
    shared_intermediate: int  # all shared experts together (0 when there are none)
    dense_layers: int  # leading layers with a dense MLP (DeepSeek first_k_dense_replace)
    top_k: int


@dataclass(frozen=True, kw_only=True)
class Vision:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    image_size: int
    patch_size: int
    image_tokens: int  # LM tokens one image becomes (LLaVA: (size/patch)^2; Gemma 3: 256)

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1  # + class token


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The language model's shape as vLLM sees it (the text part of a multimodal wrapper)."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int  # total, before tensor parallelism
    head_dim: int
    vocab_size: int
    intermediate_size: int
    gated_mlp: bool = True
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"  # what vLLM runs in (--dtype auto: float32 checkpoints → bfloat16)
    layer_windows: tuple[int | None, ...] = ()  # per layer: sliding window, None = full
    mla: MLA | None = None
    moe: MoE | None = None
    vision: Vision | None = None
    quant_method: str | None = None
    weight_bits: float | None = None  # bits per quantized linear weight, scales included
    quantized_experts_only: bool = False  # mxfp4 (gpt-oss): attention stays in dtype
    checkpoint_kv_cache_dtype: str | None = None  # what --kv-cache-dtype auto resolves to
    max_position_embeddings: int | None = None

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


def _runtime_dtype(top: Mapping[str, Any], text: Mapping[str, Any], dtype: str) -> str:
    """vLLM's ``--dtype``: ``auto`` keeps fp16/bf16 checkpoints and runs float32 (or unknown)
    ones in bfloat16 (``ModelConfig`` dtype resolution)."""
    name = dtype if dtype != "auto" else first_of(top, "torch_dtype", "dtype")
    name = name or first_of(text, "torch_dtype", "dtype") or "float32"
    name = _DTYPE_ALIASES.get(str(name), str(name)).removeprefix("torch.")
    if dtype == "auto" and name not in ("float16", "bfloat16"):
        return "bfloat16"
    if name not in DTYPE_BYTES:
        raise UnsupportedArchitecture(f"unknown dtype {name!r}")
    return name


def _weight_bits(q: Mapping[str, Any]) -> tuple[float | None, bool]:
    """Bits per quantized linear weight (with group scales) and whether only experts are."""
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq", "gptq_marlin", "awq_marlin", "auto-round", "autoround"):
        bits, group = int(q.get("bits", 4)), int(q.get("group_size", 128) or -1)
        return bits + ((16 + bits) / group if group > 0 else 0), False  # fp16 scale + zero
    if method in ("fp8", "fbgemm_fp8", "ptpc_fp8"):
        return 8.0, False
    if method == "bitsandbytes":
        return (4.5 if q.get("load_in_4bit") else 8.0), False
    if method == "mxfp4":
        return 4.25, True  # e2m1 values + one e8m0 scale per 32
    if method.startswith("modelopt"):
        algo = str((q.get("quantization") or q).get("quant_algo", "")).upper()
        return {"FP8": 8.0, "NVFP4": 4.5}.get(algo), False
    if method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            w = group.get("weights") or {}
            num_bits, size = float(w.get("num_bits", 16)), w.get("group_size")
            scale = 8 if num_bits == 4 and w.get("type") == "float" else 16  # nvfp4: fp8 scales
            return num_bits + (scale / size if w.get("strategy") == "group" and size else 0), False
    return None, False


def _layer_windows(text: Mapping[str, Any], model_type: str, layers: int) -> tuple[int | None, ...]:
    """Which layers slide (vLLM gives each its window; the rest are full attention)."""
    window = text.get("sliding_window")
    if text.get("layer_types"):
        kinds = list(text["layer_types"])[:layers]
        if any(k not in ("full_attention", "sliding_attention") for k in kinds):
            raise UnsupportedArchitecture(f"layer types {sorted(set(kinds))} are not modelled")
        return tuple(window if k == "sliding_attention" else None for k in kinds)
    if window is None or text.get("use_sliding_window") is False:
        return (None,) * layers
    if model_type == "gemma2":  # even layers slide (Gemma2DecoderLayer)
        return tuple(window if i % 2 == 0 else None for i in range(layers))
    if pattern := text.get("sliding_window_pattern"):  # Gemma 3 (6), Cohere2 (4)
        return tuple(window if (i + 1) % pattern else None for i in range(layers))
    if text.get("use_sliding_window"):  # Qwen2: layers from max_window_layers on
        start = int(text.get("max_window_layers", 0))
        return tuple(window if i >= start else None for i in range(layers))
    return (window,) * layers  # model-level window (Mistral, Phi-3): every layer


def _vision(top: Mapping[str, Any], model_type: str) -> Vision | None:
    raw = top.get("vision_config")
    if not isinstance(raw, Mapping):
        return None
    base = _LLAVA_CLIP if model_type.startswith("llava") else {}
    v = {**base, **_VISION_DEFAULTS.get(str(raw.get("model_type")), {}), **raw}
    size, patch = int(v.get("image_size", 224)), int(v.get("patch_size", 16))
    full = top.get("vision_feature_select_strategy") == "full"
    tokens = top.get("mm_tokens_per_image") or (size // patch) ** 2 + (1 if full else 0)
    return Vision(
        hidden_size=int(v.get("hidden_size", 768)),
        num_layers=int(v.get("num_hidden_layers", 12)),
        intermediate_size=int(v.get("intermediate_size", 3072)),
        image_size=size,
        patch_size=patch,
        image_tokens=int(tokens),
    )


def architecture_from_config(config: Mapping[str, Any], *, dtype: str = "auto") -> Architecture:
    """Parse a Hugging Face ``config.json`` dict; ``UnsupportedArchitecture`` when it is not a
    plain or sliding-window/MLA decoder (Mamba/linear-attention hybrids, chunked-local attention,
    encoder-decoder, KV-sharing or sparse-indexer models)."""
    model_type = str(config.get("model_type", ""))
    raw_text = config.get("text_config")
    if isinstance(raw_text, Mapping) or model_type in _WRAPPER_TEXT:
        raw_text = raw_text if isinstance(raw_text, Mapping) else {}
        text_type = str(raw_text.get("model_type") or _WRAPPER_TEXT.get(model_type, ""))
        text = {**_TEXT_DEFAULTS.get(text_type, {}), **raw_text}
    else:
        text_type, text = model_type, {**_TEXT_DEFAULTS.get(model_type, {}), **config}
    check_config(config, text)  # before any arithmetic
    for t in (model_type, text_type):
        if t in _UNSUPPORTED_TYPES:
            raise UnsupportedArchitecture(f"{t}: hybrid/recurrent/cross-attention KV not modelled")
    if config.get("is_encoder_decoder") or text.get("attention_chunk_size"):
        raise UnsupportedArchitecture(f"{model_type}: encoder-decoder or chunked-local attention")
    layers = first_of(text, "num_hidden_layers", "n_layer", "num_layers")
    hidden = first_of(text, "hidden_size", "n_embd", "d_model")
    heads = first_of(text, "num_attention_heads", "n_head")
    if not (layers and hidden and heads):
        raise UnsupportedArchitecture(f"{model_type}: no layer/hidden/head counts in config")
    # vLLM's CONFIG_FIELD_ALIASES order for KV heads; head size per get_head_size (§4).
    kv = first_of(text, *_KV_HEAD_KEYS) or heads
    head_dim = text.get("head_dim") or text.get("hidden_size_per_head") or hidden // heads
    q: Mapping[str, Any] = (
        first_of(config, "quantization_config") or first_of(text, "quantization_config") or {}
    )
    mla = None
    if text.get("kv_lora_rank") is not None:
        if text_type not in _MLA_TYPES:
            raise UnsupportedArchitecture(f"{text_type}: latent attention outside DeepSeek MLA")
        mla = MLA(
            kv_lora_rank=int(text["kv_lora_rank"]),
            q_lora_rank=text.get("q_lora_rank"),
            qk_rope_head_dim=int(text["qk_rope_head_dim"]),
            qk_nope_head_dim=int(text.get("qk_nope_head_dim", 128)),
            v_head_dim=int(text.get("v_head_dim", 128)),
        )
    inter = first_of(text, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
    moe = None
    if experts := first_of(text, "n_routed_experts", "num_local_experts", "num_experts"):
        expert_inter = int(first_of(text, "moe_intermediate_size", "intermediate_size"))
        shared = int(text.get("n_shared_experts") or 0) * expert_inter or int(
            text.get("shared_expert_intermediate_size") or 0
        )
        moe = MoE(
            num_experts=int(experts),
            expert_intermediate=expert_inter,
            shared_intermediate=shared,
            dense_layers=int(text.get("first_k_dense_replace") or 0),
            top_k=int(first_of(text, "num_experts_per_tok", "experts_per_token") or 1),
        )
    bits, experts_only = _weight_bits(q)
    tie = first_of(text, "tie_word_embeddings")
    tie = first_of(config, "tie_word_embeddings") if tie is None else tie
    return Architecture(
        model_type=text_type,
        num_layers=int(layers),
        hidden_size=int(hidden),
        num_attention_heads=int(heads),
        num_kv_heads=int(kv),
        head_dim=int(head_dim),
        vocab_size=int(first_of(text, "vocab_size", "padded_vocab_size") or 32000),
        intermediate_size=int(inter or 4 * hidden),
        gated_mlp=text_type not in _NON_GATED,
        tie_word_embeddings=bool(tie if tie is not None else text_type in _TIED),
        dtype=_runtime_dtype(config, text, dtype),
        layer_windows=_layer_windows(text, text_type, int(layers)),
        mla=mla,
        moe=moe,
        vision=_vision(config, model_type),
        quant_method=q.get("quant_method"),
        weight_bits=bits,
        quantized_experts_only=experts_only,
        checkpoint_kv_cache_dtype=checkpoint_kv_cache_dtype(q),
        max_position_embeddings=first_of(text, "max_position_embeddings", "n_positions"),
    )
