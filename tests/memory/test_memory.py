"""The analytic memory model against vLLM's rules (vllm-facts §1.2, §2.2, §3.2, §4, §9).

Configs under tests/data/configs are the published ``config.json`` of each model (the Qwen2.5 FP8
one is modelled on llm-compressor FP8 checkpoints with a ``kv_cache_scheme``). Expected numbers are
written out as the §4 arithmetic, never computed by calling the code under test.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autotune.hardware import Hardware
from autotune.memory.arch import Architecture
from autotune.memory.estimates import capture_sizes, parameter_counts
from autotune.memory.model import (
    MemoryModel,
    UnsupportedArchitecture,
    architecture_from_config,
    encoder_profile_bytes,
    estimate_memory_model,
    kv_bytes_per_token,
    kv_cache_dtype_bytes,
    kv_layout,
    resolve_kv_cache_dtype,
    total_bytes_of,
    weight_bytes,
)
from autotune.units import GIB
from tests.conftest import CONFIGS

MIB = 2**20


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / f"{name}.json").read_text())
    return data


def arch(name: str, **kwargs: Any) -> Architecture:
    return architecture_from_config(config(name), **kwargs)


LLAMA3 = "meta-llama--Llama-3.1-8B"
LLAMA2 = "meta-llama--Llama-2-7b-hf"
DSV2_LITE = "deepseek-ai--DeepSeek-V2-Lite"
MISTRAL = "mistralai--Mistral-7B-v0.1"
GEMMA2 = "google--gemma-2-9b"
GEMMA3 = "google--gemma-3-4b-it"
LLAVA = "llava-hf--llava-1.5-7b-hf"
QWEN_FP8 = "qwen2.5-7b-instruct-fp8-kv"


# --- KV bytes per token: the §4 formula by hand ------------------------------------------------


def test_dense_gqa_llama_3_1_8b() -> None:
    a = arch(LLAMA3)
    assert (a.num_layers, a.num_kv_heads, a.head_dim, a.dtype) == (32, 8, 128, "bfloat16")
    # 2 (K and V) x 32 layers x 8 KV heads x 128 head size x 2 bytes (§4 worked example)
    assert kv_bytes_per_token(arch=a) == 2 * 32 * 8 * 128 * 2 == 131072
    assert kv_layout(arch=a).windows == (None,)


def test_mha_llama_2_7b_fp16() -> None:
    a = arch(LLAMA2)
    assert a.dtype == "float16" and a.num_kv_heads == a.num_attention_heads == 32
    assert kv_bytes_per_token(arch=a) == 2 * 32 * 32 * (4096 // 32) * 2 == 524288


def test_mha_without_kv_head_field_opt_125m() -> None:
    a = arch("facebook--opt-125m")  # no num_key_value_heads: falls back to the attention heads
    assert (a.num_kv_heads, a.head_dim, a.gated_mlp, a.tie_word_embeddings) == (12, 64, False, True)
    assert kv_bytes_per_token(arch=a) == 2 * 12 * 12 * (768 // 12) * 2 == 36864


def test_explicit_head_dim_is_honoured_gemma_2() -> None:
    a = arch(GEMMA2)
    assert a.head_dim == 256 != 3584 // 16


def test_tp_divides_kv_heads_and_replicates_past_them() -> None:
    a = arch(LLAMA3)
    assert kv_bytes_per_token(arch=a, tp=2) == 2 * 32 * (8 // 2) * 128 * 2 == 65536
    assert kv_bytes_per_token(arch=a, tp=8) == 2 * 32 * 1 * 128 * 2 == 16384
    # TP 16 > 8 KV heads: each rank keeps one replicated head, max(1, 8 // 16) (§4)
    assert kv_bytes_per_token(arch=a, tp=16) == 2 * 32 * 1 * 128 * 2


def test_mla_deepseek_v2_lite() -> None:
    a = arch(DSV2_LITE)
    assert a.mla is not None and a.mla.kv_lora_rank == 512 and a.mla.qk_rope_head_dim == 64
    # one latent per layer, no factor 2, not sharded by TP: (512 + 64) x 2 bytes x 27 layers
    assert kv_bytes_per_token(arch=a) == (512 + 64) * 2 * 27 == 31104
    assert kv_bytes_per_token(arch=a, tp=4) == (512 + 64) * 2 * 27
    assert kv_bytes_per_token(arch=a, kv_cache_dtype="fp8") == (512 + 64) * 1 * 27
    assert kv_bytes_per_token(arch=a, kv_cache_dtype="fp8_ds_mla") == 656 * 27


def test_fp8_kv_cache_dtype() -> None:
    a = arch(LLAMA3)
    assert kv_cache_dtype_bytes(arch=a) == 2
    for dtype in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert kv_cache_dtype_bytes(arch=a, kv_cache_dtype=dtype) == 1
        assert kv_bytes_per_token(arch=a, kv_cache_dtype=dtype) == 2 * 32 * 8 * 128 * 1
    assert kv_bytes_per_token(arch=a, kv_cache_dtype="float32") == 2 * 32 * 8 * 128 * 4
    with pytest.raises(ValueError, match="not modelled"):
        kv_bytes_per_token(arch=a, kv_cache_dtype="turboquant_k8v4")
    with pytest.raises(ValueError, match="MLA"):
        kv_bytes_per_token(arch=a, kv_cache_dtype="fp8_ds_mla")


def test_checkpoint_fp8_kv_scheme_is_used_under_auto() -> None:
    a = arch(QWEN_FP8)  # compressed-tensors with kv_cache_scheme: the Attention layer uses fp8
    assert a.checkpoint_kv_cache_dtype == "fp8" and a.weight_bits == 8
    assert resolve_kv_cache_dtype(arch=a) == "fp8"
    assert kv_bytes_per_token(arch=a) == 2 * 28 * 4 * 128 * 1 == 28672
    # an explicit dtype wins over the checkpoint's scheme
    assert kv_bytes_per_token(arch=a, kv_cache_dtype="bfloat16") == 2 * 28 * 4 * 128 * 2
    # Qwen2's sliding_window is off (use_sliding_window: false)
    assert kv_layout(arch=a).windows == (None,)


def test_modelopt_kv_cache_quant_algo_under_auto() -> None:
    cfg = {
        **config(LLAMA3),
        "quantization_config": {
            "quant_method": "modelopt",
            "quant_algo": "FP8",
            "kv_cache_quant_algo": "FP8",
        },
    }
    a = architecture_from_config(cfg)
    assert resolve_kv_cache_dtype(arch=a) == "fp8_e4m3" and a.weight_bits == 8
    assert kv_bytes_per_token(arch=a) == 2 * 32 * 8 * 128 * 1
    nvfp4 = {
        **cfg,
        "quantization_config": {
            "quant_method": "modelopt",
            "quant_algo": "NVFP4",
            "kv_cache_quant_algo": "NVFP4",
        },
    }
    a4 = architecture_from_config(nvfp4)
    # nvfp4: per head D/2 bytes of fp4 data + D/16 fp8 scales, for K and for V
    assert kv_bytes_per_token(arch=a4) == 32 * 8 * 2 * (128 // 2 + 128 // 16)


def test_float32_checkpoint_runs_in_bfloat16_unless_dtype_given() -> None:
    assert arch(GEMMA2).dtype == "bfloat16"  # config says float32; vLLM --dtype auto → bf16
    assert arch(GEMMA2, dtype="float32").dtype_bytes == 4
    assert arch(LLAMA3, dtype="half").dtype == "float16"


# --- sliding window -----------------------------------------------------------------------------


def test_mistral_every_layer_slides_one_group() -> None:
    a = arch(MISTRAL)
    assert set(a.layer_windows) == {4096} and len(a.layer_windows) == 32
    layout = kv_layout(arch=a)
    assert layout.bytes_per_token == 2 * 32 * 8 * 128 * 2 and layout.windows == (4096,)


def test_gemma_2_alternating_windows_two_groups() -> None:
    a = arch(GEMMA2)
    assert a.layer_windows[:4] == (4096, None, 4096, None)  # even layers slide
    per_layer = 2 * 8 * 256 * 2
    # 21 sliding + 21 full layers → 2 groups of 21; a pool block holds one group's 21 pages
    layout = kv_layout(arch=a)
    assert layout.windows == (4096, None)
    assert layout.bytes_per_token == 21 * per_layer == 172032
    off = kv_layout(arch=a, hybrid_kv_cache_manager=False)  # SWA layers treated as full
    assert off.windows == (None,) and off.bytes_per_token == 42 * per_layer


def test_gemma_3_partial_text_config_and_5_to_1_pattern() -> None:
    a = arch(GEMMA3)
    # text_config omits heads: Gemma3TextConfig defaults (8 heads, 4 KV heads, head_dim 256)
    assert (a.num_layers, a.num_attention_heads, a.num_kv_heads, a.head_dim) == (34, 8, 4, 256)
    assert (a.hidden_size, a.vocab_size, a.dtype) == (2560, 262208, "bfloat16")
    full = [i for i, w in enumerate(a.layer_windows) if w is None]
    assert full == [5, 11, 17, 23, 29] and a.layer_windows[0] == 1024
    # 29 sliding + 5 full: group size 5 → ceil(29/5) = 6 sliding groups + 1 full group;
    # the widest group has ceil(29/6) = 5 layers of 2 x 4 x 256 x 2 bytes
    layout = kv_layout(arch=a)
    assert layout.windows == (1024,) * 6 + (None,)
    assert layout.bytes_per_token == 5 * (2 * 4 * 256 * 2) == 20480
    assert a.vision is not None and a.vision.image_tokens == 256


def test_sliding_window_blocks_per_request_and_fit() -> None:
    model = MemoryModel(
        total_bytes=80 * GIB,
        weights_bytes=16 * GIB,
        activation_peak_bytes=2 * GIB,
        non_torch_bytes=GIB,
        cuda_graph_bytes=GIB,
        kv_bytes_per_token=131072,
        kv_windows=(4096,),
        max_num_batched_tokens=8192,
        concurrent_batches=2,
    )
    # SlidingWindowSpec: ceil(min(4096 - 1 + 2 x 8192, 32768) / 16) + 1
    assert model.blocks_per_request(32768) == math.ceil((4096 - 1 + 2 * 8192) / 16) + 1 == 1281
    assert model.blocks_per_request(100) == math.ceil(100 / 16) + 1
    # the need stops growing with the length, so the search returns its limit
    assert model.max_model_len_fit(utilization=0.75, limit=32768) == 32768
    hybrid = replace(model, kv_windows=(4096, None))
    assert hybrid.blocks_per_request(8192) == (8192 // 16 + 1) + 8192 // 16


# --- vision wrappers ----------------------------------------------------------------------------


def test_llava_uses_llama_defaults_for_partial_text_config() -> None:
    a = arch(LLAVA)
    # text_config has only vocab/max positions: LlamaConfig defaults give Llama-2-7B's shape
    assert (a.num_layers, a.hidden_size, a.num_kv_heads, a.intermediate_size) == (
        32,
        4096,
        32,
        11008,
    )
    assert (a.vocab_size, a.max_position_embeddings, a.dtype) == (32064, 4096, "float16")
    assert kv_bytes_per_token(arch=a) == 2 * 32 * 32 * 128 * 2 == 524288
    assert a.vision is not None and a.vision.image_tokens == (336 // 14) ** 2 == 576


def test_encoder_profile_bytes() -> None:
    a = arch(LLAVA)
    cache = 5 * 576 * 4096 * 2  # 5 images x 576 tokens x LM hidden x fp16
    tower = 5 * (24 * 24 + 1) * (4 * 1024 + 2 * 4096) * 2  # one CLIP layer's activations
    assert encoder_profile_bytes(arch=a, images=5) == cache + tower
    assert encoder_profile_bytes(arch=a, images=0) == 0
    assert encoder_profile_bytes(arch=arch(LLAMA3), images=5) == 0


# --- unsupported architectures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        config("Qwen--Qwen3-Next-80B-A3B-Instruct"),
        {"model_type": "jamba", "num_hidden_layers": 32, "hidden_size": 4096},
        {"model_type": "whisper", "is_encoder_decoder": True},
        {**config(LLAMA3), "model_type": "llama4_text", "attention_chunk_size": 8192},
        {**config(LLAMA3), "attention_chunk_size": 8192},
        {**config(LLAMA3), "layer_types": ["linear_attention", "full_attention"] * 16},
        {"model_type": "mystery"},
        {**config(LLAMA3), "model_type": "minicpm3", "kv_lora_rank": 256, "qk_rope_head_dim": 32},
    ],
)
def test_unsupported_architectures_raise(cfg: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedArchitecture):
        architecture_from_config(cfg)
    assert issubclass(UnsupportedArchitecture, NotImplementedError)


# --- memory budget ------------------------------------------------------------------------------


def _model(**kwargs: Any) -> MemoryModel:
    base: dict[str, Any] = {
        "total_bytes": 80 * GIB,
        "weights_bytes": 16 * GIB,
        "activation_peak_bytes": 2 * GIB,
        "non_torch_bytes": GIB,
        "cuda_graph_bytes": GIB,
        "kv_bytes_per_token": 131072,
    }
    return MemoryModel(**{**base, **kwargs})


def test_kv_cache_tokens_fit_and_concurrency_by_hand() -> None:
    model = _model()
    # 0.75 x 80 GiB = 60 GiB requested; minus 16 + 2 + 1 + 1 GiB (0.33: graphs subtracted)
    assert model.kv_cache_bytes(utilization=0.75) == 40 * GIB
    block = 16 * 131072  # 2 MiB
    assert model.num_blocks(utilization=0.75) == 40 * GIB // block == 20480
    assert model.kv_cache_tokens(utilization=0.75) == 20480 * 16 == 327680
    # one null block is held back: (ceil(L / 16) + 1) blocks must fit → L ≤ 20479 x 16
    assert model.max_model_len_fit(utilization=0.75) == 20479 * 16 == 327664
    assert model.fits(utilization=0.75, max_model_len=327664)
    assert not model.fits(utilization=0.75, max_model_len=327665)
    assert model.max_model_len_fit(utilization=0.75, limit=131072) == 131072
    # logged concurrency: num_blocks / blocks per request
    assert model.max_concurrency(utilization=0.75, request_tokens=32768) == 20480 / 2048 == 10.0
    assert model.max_concurrency(utilization=0.75, request_tokens=1000) == 20480 / 63
    # the logged "GPU KV cache size" is int(concurrency x max_model_len)
    assert model.logged_kv_cache_tokens(utilization=0.75, max_model_len=32768) == 327680
    assert model.logged_kv_cache_tokens(utilization=0.75, max_model_len=1000) == int(
        20480 / 63 * 1000
    )
    # 0.11: CUDA graphs came out of the 1 - util headroom
    assert _model(cuda_graphs_in_budget=False).kv_cache_bytes(utilization=0.75) == 41 * GIB


def test_no_memory_left() -> None:
    model = _model()
    assert model.kv_cache_bytes(utilization=0.2) == math.ceil(80 * GIB * 0.2) - 20 * GIB < 0
    assert model.kv_cache_tokens(utilization=0.2) == 0
    assert model.max_model_len_fit(utilization=0.2) == 0
    assert not model.fits(utilization=0.2, max_model_len=1)


def test_utilization_for_tokens_inverts_kv_cache_tokens() -> None:
    model = _model()
    util = model.utilization_for_tokens(327680)
    assert util == pytest.approx(0.75) and util <= 0.75
    assert model.kv_cache_tokens(utilization=util) == 327680
    assert model.kv_cache_tokens(utilization=math.nextafter(util, 0)) < 327680
    util = model.utilization_for_tokens(327681)  # one more token needs one more 2 MiB block
    assert util == pytest.approx((20481 * 2 * MIB + 20 * GIB) / (80 * GIB))
    assert model.kv_cache_tokens(utilization=util) == 20481 * 16
    assert model.kv_cache_tokens(utilization=math.nextafter(util, 0)) == 20480 * 16
    assert _model().utilization_for_tokens(10**9) > 1  # cannot fit on this GPU


def test_total_bytes_of_hardware() -> None:
    assert total_bytes_of(Hardware(gpu_name="H100", memory_gib=80.0)) == 80 * GIB


# --- CUDA graph sizes ---------------------------------------------------------------------------


def test_capture_sizes() -> None:
    # [1, 2, 4] + 8..248 step 8 + 256..512 step 16: 3 + 31 + 17 = 51 sizes (§2.2)
    sizes = capture_sizes(max_num_seqs=256, max_num_batched_tokens=8192)
    assert len(sizes) == 3 + 31 + 17 == 51 and sizes[-1] == 512
    assert capture_sizes(max_num_seqs=12, max_num_batched_tokens=8192) == [1, 2, 4, 8, 12, 16, 24]
    assert capture_sizes(max_num_seqs=1024, max_num_batched_tokens=300)[-1] == 300


# --- weights ------------------------------------------------------------------------------------


def test_weight_estimate_llama_3_1_8b() -> None:
    a = arch(LLAMA3)
    embeddings = 2 * 128256 * 4096  # embed_tokens + untied lm_head
    attention = 4096 * (32 + 2 * 8) * 128 + 32 * 128 * 4096
    mlp = 3 * 4096 * 14336
    params = embeddings + 32 * (attention + mlp)
    assert params == 8_029_995_008  # published 8,030,261,248 incl. 266k norm weights
    assert weight_bytes(arch=a, model_dir=None) == params * 2
    assert weight_bytes(arch=a, model_dir=None, tp=2) == params * 2 // 2


def test_weight_estimate_moe_mla_deepseek_v2_lite() -> None:
    a = arch(DSV2_LITE)
    assert a.moe is not None and (a.moe.num_experts, a.moe.dense_layers) == (64, 1)
    h, heads = 2048, 16
    attention = h * heads * (128 + 64) + h * (512 + 64) + 512 * heads * (128 + 128)
    attention += heads * 128 * h
    dense_mlp = 3 * h * 10944
    moe_layer = 64 * 3 * h * 1408 + 2 * 3 * h * 1408 + h * 64  # routed + 2 shared + router
    params = 2 * 102400 * h + 27 * attention + dense_mlp + 26 * moe_layer
    counts = parameter_counts(a)
    assert counts.embedding + counts.dense + counts.experts == params
    assert abs(params / 15.7e9 - 1) < 0.01  # "16B total parameters" (15.7B)


def test_weight_estimate_quantized() -> None:
    gptq = {
        **config(LLAMA3),
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128},
    }
    a = architecture_from_config(gptq)
    assert a.weight_bits == 4 + (16 + 4) / 128  # fp16 scale + 4-bit zero per group of 128
    linear = 32 * (4096 * 48 * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336)
    expected = 2 * 128256 * 4096 * 2 + linear * a.weight_bits / 8
    assert weight_bytes(arch=a, model_dir=None) == math.ceil(expected)


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, int]]) -> None:
    """A minimal safetensors file: 8-byte header size, JSON header, zero data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, nbytes) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": [nbytes],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(offset))


def test_weight_bytes_from_safetensors(tmp_path: Path) -> None:
    a = arch(LLAMA3)
    _write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"a": ("BF16", 4000)})
    _write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"b": ("BF16", 2000)})
    _write_safetensors(tmp_path / "consolidated.safetensors", {"c": ("BF16", 6000)})
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        }
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    # the index names the loaded files; Mistral-style consolidated.safetensors is not loaded
    assert weight_bytes(arch=a, model_dir=tmp_path) == 4000 + 2000
    assert weight_bytes(arch=a, model_dir=tmp_path, tp=4) == 6000 // 4
    assert weight_bytes(arch=a, model_dir=tmp_path / "missing") == weight_bytes(
        arch=a, model_dir=None
    )


def test_float32_checkpoint_is_loaded_in_bfloat16(tmp_path: Path) -> None:
    a = arch(GEMMA2)  # float32 checkpoint, runs in bfloat16
    _write_safetensors(tmp_path / "model.safetensors", {"w": ("F32", 4096), "i": ("I64", 80)})
    assert weight_bytes(arch=a, model_dir=tmp_path) == 4096 // 4 * 2 + 80


def test_quantized_checkpoint_counts_file_sizes(tmp_path: Path) -> None:
    a = arch(QWEN_FP8)
    _write_safetensors(tmp_path / "model.safetensors", {"w": ("F8_E4M3", 1000), "s": ("F32", 8)})
    size = (tmp_path / "model.safetensors").stat().st_size
    assert weight_bytes(arch=a, model_dir=tmp_path) == size


# --- the model before any boot ------------------------------------------------------------------


def test_estimate_memory_model_defaults() -> None:
    a = arch(LLAMA3)
    model = estimate_memory_model(arch=a, total_bytes=80 * GIB)
    assert model.kv_bytes_per_token == 131072 and model.kv_windows == (None,)
    assert model.weights_bytes == 8_029_995_008 * 2
    assert model.non_torch_bytes == GIB // 2 and model.cuda_graph_bytes > 0
    assert 0 < model.activation_peak_bytes < 8 * GIB
    assert model.fits(utilization=0.92, max_model_len=131072)
    eager = estimate_memory_model(arch=a, total_bytes=80 * GIB, enforce_eager=True, tp=2)
    assert eager.cuda_graph_bytes == 0 and eager.non_torch_bytes == GIB
    assert eager.kv_bytes_per_token == 65536 and eager.weights_bytes == 8_029_995_008

    vision = estimate_memory_model(arch=arch(LLAVA), total_bytes=80 * GIB, profiled_images=4)
    text = estimate_memory_model(arch=arch(LLAVA), total_bytes=80 * GIB)
    assert vision.activation_peak_bytes - text.activation_peak_bytes == encoder_profile_bytes(
        arch=arch(LLAVA), images=4
    )
    gemma = estimate_memory_model(arch=arch(GEMMA3), total_bytes=24 * GIB)
    assert gemma.kv_windows == (1024,) * 6 + (None,)
