"""Parameter counts and the rough pre-calibration estimates of what a boot costs besides the KV
cache: weights, CUDA graph capture sizes and memory, the dummy forward's activation peak and the
multimodal encoder profile. The launches' numbers correct them (``autotune.memory.calibration``,
``autotune.search.screen``). Only ``weight_bytes`` reads files (safetensors headers)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.memory.arch import Architecture
from autotune.units import MIB

_FLOAT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


@dataclass(frozen=True)
class ParamCounts:
    embedding: int  # input embeddings + untied lm_head (kept in dtype)
    dense: int  # attention, dense MLPs, shared experts, routers
    experts: int  # routed experts
    vision: int  # vision tower + projector (kept in dtype)


def parameter_counts(arch: Architecture) -> ParamCounts:
    """Parameter estimate: embeddings V·h (x2 unless tied); attention q, k, v, o (MLA: q or
    q_a/q_b, kv_a, kv_b, o); MLP 3·h·I (2·h·I ungated); MoE layers E·3·h·I_moe routed experts +
    shared experts + router; vision tower 4h² + 2h·I per layer + patch embedding + projector.
    Norms and biases are left out (< 0.1%)."""
    h, d, a = arch.hidden_size, arch.head_dim, arch.num_attention_heads
    if (m := arch.mla) is not None:
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = h * m.q_lora_rank + m.q_lora_rank * a * qk if m.q_lora_rank else h * a * qk
        attn = q + h * (m.kv_lora_rank + m.qk_rope_head_dim)
        attn += m.kv_lora_rank * a * (m.qk_nope_head_dim + m.v_head_dim) + a * m.v_head_dim * h
    else:
        attn = h * (a + 2 * arch.num_kv_heads) * d + a * d * h
    mlp = (3 if arch.gated_mlp else 2) * h * arch.intermediate_size
    dense, experts, moe = arch.num_layers * (attn + mlp), 0, arch.moe
    if moe is not None:
        sparse = arch.num_layers - moe.dense_layers
        shared_and_router = 3 * h * moe.shared_intermediate + h * moe.num_experts
        dense += sparse * (shared_and_router - mlp)  # MoE layers have no dense MLP
        experts = sparse * moe.num_experts * 3 * h * moe.expert_intermediate
    vision = 0
    if (v := arch.vision) is not None:
        vision = v.num_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)
        vision += 3 * v.patch_size**2 * v.hidden_size + v.hidden_size * h + h * h
    embedding = arch.vocab_size * h * (1 if arch.tie_word_embeddings else 2)
    return ParamCounts(embedding=embedding, dense=dense, experts=experts, vision=vision)


def capture_sizes(
    *, max_num_seqs: int, max_num_batched_tokens: int, spec_tokens: int = 0, blackwell: bool = False
) -> list[int]:
    """CUDA graph batch sizes (vllm-facts §2.2): [1, 2, 4] + range(8, 256, 8) + range(256, max+1,
    16) with max = min(max_num_seqs x decode_len x 2, 512 (1024 on Blackwell), batched tokens),
    plus max_num_batched_tokens and max_num_seqs where they do not exceed max."""
    top = min(max_num_seqs * (1 + spec_tokens) * 2, 1024 if blackwell else 512)
    top = min(top, max_num_batched_tokens)
    sizes = {1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)}
    sizes |= {max_num_batched_tokens, max_num_seqs}
    return sorted(n for n in sizes if n <= top)


def encoder_profile_bytes(
    *, arch: Architecture, images: int, image_tokens: int | None = None
) -> int:
    """Approximate memory of the multimodal encoder profile (§3.2): ``images`` dummy images (see
    ``autotune.engine.multimodal.profiled_images``)
    go through the vision tower in one batch and their
    outputs stay in the encoder cache during the profile. Cache: images x image_tokens x LM hidden
    x dtype; tower: one layer's activations, images x patches x (4 h_v + 2 I_v) x dtype. §3 gives
    no byte formula, so this is an estimate to be replaced by calibration."""
    v = arch.vision
    if v is None or images <= 0:
        return 0
    tokens = image_tokens if image_tokens is not None else v.image_tokens
    cache = images * tokens * arch.hidden_size
    tower = images * v.patches * (4 * v.hidden_size + 2 * v.intermediate_size)
    return (cache + tower) * arch.dtype_bytes


def default_activation_bytes(
    *, arch: Architecture, tp: int, max_num_batched_tokens: int, max_num_seqs: int
) -> int:
    """Heuristic peak of the dummy forward (§1.2, §2.3) before any calibration: per batched token
    (4 h + (q+k+v width + 3 x MLP width) / TP) x dtype, where the MLP width is the intermediate
    size (MoE: top_k x expert size); plus the sampler's logits, 3 copies of
    min(batched tokens, max_num_seqs) x vocab x fp32."""
    if arch.mla is not None:
        m = arch.mla
        qkv = arch.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        qkv += m.kv_lora_rank + m.qk_rope_head_dim
    else:
        qkv = (arch.num_attention_heads + 2 * arch.num_kv_heads) * arch.head_dim
    moe = arch.moe
    mlp = moe.top_k * moe.expert_intermediate if moe else arch.intermediate_size
    per_token = (4 * arch.hidden_size + (qkv + 3 * mlp) // tp) * arch.dtype_bytes
    sampler = 3 * min(max_num_batched_tokens, max_num_seqs) * arch.vocab_size * 4
    return max_num_batched_tokens * per_token + sampler


def default_cuda_graph_bytes(
    *, arch: Architecture, max_num_seqs: int, max_num_batched_tokens: int
) -> int:
    """Heuristic CUDA graph estimate before any calibration (FULL_AND_PIECEWISE, §2.2): two
    modes x capture sizes x (2 MiB + 64 KiB per layer)."""
    sizes = capture_sizes(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    return 2 * len(sizes) * (2 * 2**20 + arch.num_layers * 64 * 1024)


def estimated_weight_bytes(arch: Architecture) -> int:
    """Weights of the whole model from ``parameter_counts``: quantized linear layers take
    ``weight_bits`` (group scales included; mxfp4 only the routed experts), embeddings, lm_head
    and the vision tower stay in the model dtype."""
    p, b = parameter_counts(arch), arch.dtype_bytes
    quant = arch.weight_bits / 8 if arch.weight_bits else b
    dense = p.dense * (b if arch.quantized_experts_only else quant)
    return math.ceil((p.embedding + p.vision) * b + dense + p.experts * quant)


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100 * MIB:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _checkpoint_bytes(model_dir: Path, arch: Architecture) -> int | None:
    """Bytes of the checkpoint's tensors once loaded: only files ``model.safetensors.index.json``
    names (not a Mistral ``consolidated.safetensors`` beside them); unquantized float tensors cast
    to the runtime dtype (float32 checkpoints run in bf16); quantized files count as stored."""
    files = sorted(model_dir.glob("*.safetensors"))
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            named = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            named = set()
        files = [f for f in files if f.name in named] or files
    if not files:
        return None
    total = 0
    for file in files:
        header = None if arch.quant_method else _safetensors_header(file)
        if header is None:
            total += file.stat().st_size
            continue
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            begin, end = tensor["data_offsets"]
            size = _FLOAT_BYTES.get(str(tensor.get("dtype")))
            total += (end - begin) // size * arch.dtype_bytes if size else end - begin
    return total


def weight_bytes(*, arch: Architecture, model_dir: Path | None, tp: int = 1) -> int:
    """Weight memory per GPU: the checkpoint's safetensors when present, else the parameter
    estimate (``estimated_weight_bytes``); divided by TP (replicated norms and biases
    are negligible)."""
    total = _checkpoint_bytes(model_dir, arch) if model_dir is not None else None
    return -(-(total if total is not None else estimated_weight_bytes(arch)) // tp)
