"""Fake-engine scenarios drawn at random within realistic ranges, split once into a development
set (tune the tuner on these) and an evaluation set (report on these, never tune on them).

A scenario is a model (``config.json``), a GPU, the fake engine's ``AUTOTUNE_FAKE_*`` knobs and
a workload: what ``benchmarks/tuning_quality.py`` grades the tuner on. The draw follows the
physics of a decoder on a GPU rather than the tuner: weights take 30-92% of the GPU, a step
costs the weights' read time plus per-sequence, per-prefill-token and per-context-token terms
scaled to the GPU's bandwidth and compute, activation and CUDA-graph memory vary by an order of
magnitude, some GPUs are partly taken by another process, some configurations die under load
(a runtime-OOM cliff just below the startup limit, or unprofiled memory per batched token), and
every launch's speed is noisy (up to +-30%).

``SPLIT_SEED`` fixes the draw and the split: changing it, or the draw, makes a new evaluation
set, and results on the old one no longer say anything about the new one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from autotune.load.workload import Workload
from autotune.testing._fake_boot import CONTEXT_GIB
from autotune.testing._fake_model import ModelInfo

SPLIT_SEED = 20261202
DEV_SIZE = 10
EVAL_SIZE = 32


@dataclass(frozen=True)
class Scenario:
    """A model on a GPU under a workload, and the ranges a user would give ``autotune tune``."""

    key: str
    name: str
    shape: str
    config: Mapping[str, Any]
    gpu: str
    env: Mapping[str, str]  # AUTOTUNE_FAKE_* knobs
    workload: Workload
    ranges: Mapping[str, str] = field(default_factory=dict)
    min_model_len: int | None = None
    min_images: int | None = None
    image_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Gpu:
    name: str
    gib: int
    bandwidth: float  # GiB/ms of memory bandwidth (what a decode step reads)
    tflops: float  # dense bf16 TFLOP/s reached in prefill


GPUS = (
    _Gpu("L4", 24, 0.28, 90),
    _Gpu("A10G", 24, 0.56, 110),
    _Gpu("A4000", 16, 0.42, 60),
    _Gpu("L40S", 48, 0.80, 280),
    _Gpu("A100", 40, 1.45, 250),
    _Gpu("A100", 80, 1.90, 250),
    _Gpu("H100", 80, 3.10, 600),
)

# (name, input tokens, output tokens, requests per benchmark)
WORKLOADS = (
    ("chat", 200, 200, 160),
    ("short", 128, 32, 256),
    ("rag", 3000, 512, 96),
    ("long-context", 16000, 256, 48),
)


def _text_config(rng: random.Random, weights_gib: float, kv_room: float) -> dict[str, Any]:
    """A bf16 decoder whose weights come to about ``weights_gib``; GQA or MHA, with as many KV
    heads as leave ``kv_room`` bytes per token of KV cache at most (one head at least)."""
    hidden = rng.choice((2048, 3072, 4096, 5120, 6144, 8192))
    head_dim = 128 if hidden >= 3072 else 64
    heads = hidden // head_dim
    intermediate = int(hidden * rng.uniform(2.7, 3.6)) // 256 * 256
    vocab = rng.choice((32000, 128256, 151936))
    tied = hidden <= 3072
    embed = vocab * hidden * (1 if tied else 2)

    def layers_for(kv_heads: int) -> int:
        per_layer = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
        per_layer += 3 * hidden * intermediate
        return max(4, round((weights_gib * 2**30 / 2 - embed) / per_layer))

    options = [h for h in (1, 2, 4, 8, 16, heads) if h <= heads and heads % h == 0]
    fits = [h for h in options if 4 * layers_for(h) * h * head_dim <= kv_room] or [1]
    kv_heads = rng.choice(fits)
    layers = layers_for(kv_heads)
    return {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "max_position_embeddings": 32768,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "vocab_size": vocab,
    }


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw(rng: random.Random, *, key: str) -> Scenario:
    """One scenario; every knob drawn from ``rng``."""
    gpu = rng.choice(GPUS)
    used = rng.uniform(0.05, 0.2) * gpu.gib if rng.random() < 0.25 else 0.0
    room = 0.94 - (used + CONTEXT_GIB) / gpu.gib  # what the weights may take at most
    share = min(rng.uniform(0.30, 0.92), room - 0.06)
    vision = rng.random() < 0.2
    kind, input_len, output_len, prompts = rng.choice(WORKLOADS[:3] if vision else WORKLOADS)
    input_len = max(16, round(input_len * rng.uniform(0.7, 1.3)))
    output_len = max(16, round(output_len * rng.uniform(0.7, 1.3)))
    side = rng.choice((224, 336))
    min_images = rng.randint(1, 4) if vision else 0
    context = input_len + output_len + min_images * (side // 14) ** 2
    # KV room at utilization 0.9 after the weights and ~1 GiB of activations: at least four
    # requests' context must fit, or no configuration could serve the workload at all
    kv_gib = 0.9 * gpu.gib - used - share * gpu.gib - 1.0
    config = _text_config(rng, share * gpu.gib, kv_gib * 2**30 / (4 * context))
    model = ModelInfo.from_config(config)  # as the fake engine will read it
    weights = model.params() * 2 / 2**30
    kv_per_token = 2 * model.layers * model.kv_heads * model.head_dim * 2
    env: dict[str, float] = {
        "GPU_MEMORY_GIB": gpu.gib,
        "ACT_FACTOR": _log_uniform(rng, 8, 120),
        "STEP_FIXED_MS": weights / gpu.bandwidth * rng.uniform(0.9, 1.4) + rng.uniform(1, 4),
        "STEP_SEQ_MS": _log_uniform(rng, 0.02, 0.3),
        "STEP_TOKEN_US": 2 * weights / 2 * 2**30 / (gpu.tflops * 1e12) * 1e6 * rng.uniform(1, 2),
        "STEP_KV_MS": kv_per_token * 1000 / 2**30 / gpu.bandwidth * rng.uniform(0.8, 1.6),
        "NOISE": rng.uniform(0.0, 0.3),
    }
    if used:
        env["GPU_USED_GIB"] = used
    if rng.random() < 0.5:
        env["GRAPH_MIB"] = _log_uniform(rng, 4, 48)
    cliff = ""
    hazard = rng.random()
    if hazard < 0.15:  # a hard runtime-OOM cliff just below the startup limit
        limit = math.floor((1 - (used + CONTEXT_GIB) / gpu.gib) * 100) / 100
        env["LOAD_OOM_UTIL"] = round(limit - rng.choice((0.0, 0.01, 0.02, 0.03, 0.04)), 2)
        cliff = f", dies under load from utilization {env['LOAD_OOM_UTIL']}"
    elif hazard < 0.45:  # unprofiled runtime memory per batched token
        env["LOAD_MIB_PER_KTOKEN"] = _log_uniform(rng, 20, 200)
        cliff = f", {env['LOAD_MIB_PER_KTOKEN']:.0f} MiB unprofiled per 1k running tokens"
    image_size = None
    if vision:
        config = {
            "architectures": ["LlavaForConditionalGeneration"],
            "text_config": config,
            "vision_config": {"image_size": side, "patch_size": 14, "hidden_size": 1024},
            "vision_feature_select_strategy": "default",
        }
        image_size = (side, side)
        env["IMAGE_MIB"] = _log_uniform(rng, 100, 600)
    workload = Workload(
        input_len=input_len,
        output_len=output_len,
        num_prompts=prompts,
        images_per_request=(min_images, min_images) if min_images else None,
        image_size=image_size or (512, 512),
    )
    ranges = {"max_model_len": str(_round_len(context))}
    text = f"{weights:.1f} GiB of weights on {gpu.name}:{gpu.gib}"
    text += f" ({weights / gpu.gib:.0%})" + (f", {used:.1f} GiB taken" if used else "")
    text += f", {kv_per_token // 1024} KiB KV/token, {kind} {input_len}/{output_len}"
    text += f", {min_images} images" if min_images else ""
    text += cliff + f", noise {env['NOISE']:.0%}"
    return Scenario(
        key=key,
        name=f"{key}-{kind}-{gpu.name.lower()}",
        shape=text,
        config=config,
        gpu=f"{gpu.name}:{gpu.gib}",
        env={f"AUTOTUNE_FAKE_{k}": f"{v:.4g}" for k, v in env.items()},
        workload=workload,
        ranges=ranges,
        min_images=min_images or None,
        image_size=image_size,
    )


def _round_len(tokens: int) -> int:
    """The context a user would ask for: the next multiple of 1024 above the request."""
    return (tokens // 1024 + 1) * 1024


def split(seed: int = SPLIT_SEED) -> tuple[tuple[Scenario, ...], tuple[Scenario, ...]]:
    """The development and evaluation sets: ``DEV_SIZE + EVAL_SIZE`` draws from one generator
    seeded with ``seed``, shuffled, the first ``DEV_SIZE`` for development."""
    rng = random.Random(seed)
    drawn = [draw(rng, key=f"s{i:02d}") for i in range(DEV_SIZE + EVAL_SIZE)]
    order = list(range(len(drawn)))
    random.Random(seed + 1).shuffle(order)
    dev = tuple(_renamed(drawn[i], f"d{n:02d}") for n, i in enumerate(order[:DEV_SIZE]))
    ev = tuple(_renamed(drawn[i], f"e{n:02d}") for n, i in enumerate(order[DEV_SIZE:]))
    return dev, ev


def _renamed(s: Scenario, key: str) -> Scenario:
    return replace(s, key=key, name=key + s.name[3:])
