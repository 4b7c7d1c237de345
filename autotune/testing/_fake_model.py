"""The model side of the fake engine: ``config.json`` sizes, ``AUTOTUNE_FAKE_*`` knobs, settings.

Pure data; the memory phases that use it live in ``_fake_boot``.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelError(Exception):
    """The model cannot be resolved; the message is the final error line to print."""


def speed_factor(noise: float, rng: random.Random) -> float:
    """One launch's speed on a machine with ``noise``: mostly within a quarter of it, one launch
    in five a slow outlier down to ``1 - noise`` (other work on the machine)."""
    if noise <= 0:
        return 1.0
    if rng.random() < 0.2:
        return 1.0 - rng.uniform(noise / 2, noise)
    return min(max(1.0 + rng.gauss(0.0, noise / 4), 1.0 - noise), 1.0 + noise)


@dataclass(frozen=True)
class FakeEnv:
    """Knobs read from ``AUTOTUNE_FAKE_*`` environment variables."""

    total: float = 24.0
    used: float = 0.0
    weights: float | None = None
    act_factor: float = 24.0
    startup_s: float = 1.0
    time_scale: float = 1.0
    load_oom_util: float | None = None
    crash_after: int | None = None
    image_mib: float = 64.0  # encoder-profile memory of one full-size dummy image
    load_mib_per_ktoken: float | None = None  # unprofiled runtime memory per 1000 batch tokens
    graph_mib: float | None = None  # CUDA-graph memory per captured size (None: from the weights)
    step_fixed_ms: float = 15.0  # one engine step: fixed cost,
    step_seq_ms: float = 0.25  # per running sequence,
    step_token_us: float = 10.0  # per prefilled token,
    step_kv_ms: float = 0.0  # per 1000 tokens of context in the running batch (attention reads)
    noise: float = 0.0  # per-launch speed factor drawn within 1 +- noise (a loaded machine)

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> FakeEnv:
        def num(name: str) -> float | None:
            raw = env.get("AUTOTUNE_FAKE_" + name, "").strip()
            return float(raw) if raw else None

        def get(name: str, default: float) -> float:
            value = num(name)
            return default if value is None else value

        crash = num("CRASH_AFTER_REQUESTS")
        return cls(
            total=get("GPU_MEMORY_GIB", 24.0),
            used=get("GPU_USED_GIB", 0.0),
            weights=num("WEIGHTS_GIB"),
            act_factor=get("ACT_FACTOR", 24.0),
            startup_s=get("STARTUP_S", 1.0),
            time_scale=get("TIME_SCALE", 1.0),
            load_oom_util=num("LOAD_OOM_UTIL"),
            crash_after=None if crash is None else int(crash),
            image_mib=get("IMAGE_MIB", 64.0),
            load_mib_per_ktoken=num("LOAD_MIB_PER_KTOKEN"),
            graph_mib=num("GRAPH_MIB"),
            step_fixed_ms=get("STEP_FIXED_MS", 15.0),
            step_seq_ms=get("STEP_SEQ_MS", 0.25),
            step_token_us=get("STEP_TOKEN_US", 10.0),
            step_kv_ms=get("STEP_KV_MS", 0.0),
            noise=get("NOISE", 0.0),
        )

    def step_seconds(self, *, batch: int, tokens: int, context: int) -> float:
        """One engine step's duration (before ``time_scale``): ``batch`` running sequences,
        ``tokens`` prefilled, ``context`` tokens of KV cache held by the running batch."""
        return (
            self.step_fixed_ms / 1e3
            + self.step_seq_ms / 1e3 * batch
            + self.step_token_us / 1e6 * tokens
            + self.step_kv_ms / 1e6 * context
        )

    def token_limit(self, util: float, context_gib: float) -> int | None:
        """LOAD_MIB_PER_KTOKEN: tokens in the running batch whose unprofiled runtime memory
        fills what the reservation leaves free; more than that is an OOM under load."""
        if not self.load_mib_per_ktoken:
            return None
        left_gib = self.total - self.used - context_gib - util * self.total
        return max(0, int(left_gib * 1024 / self.load_mib_per_ktoken * 1000))


@dataclass(frozen=True)
class ModelInfo:
    """The few ``config.json`` fields that size weights, activations and the KV cache."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool
    dtype: str
    max_len: int
    image_tokens: int | None = None  # tokens per image (vision models only)
    image_size: int = 0  # the vision tower's input side, in pixels
    vision_params: int = 0  # vision tower + projector

    @property
    def is_vision(self) -> bool:
        return self.image_tokens is not None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelInfo:
        text = cfg.get("text_config")
        t: Mapping[str, Any] = text if isinstance(text, dict) else cfg
        hidden = int(t.get("hidden_size", 4096))
        heads = int(t.get("num_attention_heads", 32))
        dtype = t.get("torch_dtype") or t.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype")
        vision = cfg.get("vision_config")
        archs = cfg.get("architectures") or []
        tokens = size = vparams = 0
        if isinstance(vision, dict) or any("ConditionalGeneration" in str(a) for a in archs):
            v: Mapping[str, Any] = vision if isinstance(vision, dict) else {}  # LLaVA's CLIP
            size, patch = int(v.get("image_size", 336)), int(v.get("patch_size", 14))
            vh = int(v.get("hidden_size", 1024))
            per_layer = 4 * vh * vh + 2 * vh * int(v.get("intermediate_size", 4 * vh))
            grid = (size // patch) ** 2
            embed = 3 * patch * patch * vh + (grid + 1) * vh
            vparams = int(v.get("num_hidden_layers", 24)) * per_layer + embed
            vparams += vh * hidden + hidden * hidden  # the two-layer projector
            full = cfg.get("vision_feature_select_strategy", "default") == "full"
            tokens = grid + (1 if full else 0)  # "default" drops the CLS token
        return cls(
            layers=int(t.get("num_hidden_layers", 32)),
            heads=heads,
            kv_heads=int(t.get("num_key_value_heads") or heads),
            head_dim=int(t.get("head_dim") or hidden // heads),
            hidden=hidden,
            intermediate=int(t.get("intermediate_size", 4 * hidden)),
            vocab=int(t.get("vocab_size", 32000)),
            tied=bool(t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            dtype=str(dtype or "bfloat16"),
            max_len=int(t.get("max_position_embeddings", 2048)),
            image_tokens=tokens or None,
            image_size=size,
            vision_params=vparams,
        )

    def params(self) -> int:
        """Rough parameter count of a dense decoder (without any vision tower)."""
        h, d = self.hidden, self.head_dim
        per_layer = 2 * h * self.heads * d + 2 * h * self.kv_heads * d + 3 * h * self.intermediate
        return self.vocab * h * (1 if self.tied else 2) + self.layers * per_layer


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_model(model: str) -> ModelInfo:
    """Find ``config.json`` for a local directory or a cached hub id, like an offline server."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"OSError: {model} does not appear to have a file named config.json. "
                f"Checkout 'https://huggingface.co/{model}/tree/None' for available files."
            )
        return ModelInfo.from_config(json.loads((path / "config.json").read_text()))
    if model.startswith((".", "/", "~")) or model.count(os.sep) > 1 or path.exists():
        raise ModelError(
            "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' "
            f"or 'namespace/repo_name': '{model}'. Use `repo_type` argument if needed."
        )
    repo = _hub_cache() / ("models--" + model.replace("/", "--"))
    ref = repo / "refs" / "main"
    found = [repo / "snapshots" / ref.read_text().strip() / "config.json"] if ref.is_file() else []
    found += sorted(repo.glob("snapshots/*/config.json"))
    for config in found:
        if config.is_file():
            return ModelInfo.from_config(json.loads(config.read_text()))
    raise ModelError(
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached "
        "snapshot folder for the specified revision on the local disk and outgoing traffic has "
        "been disabled. To enable repo look-ups and downloads online, pass "
        "'local_files_only=False' as input."
    )


@dataclass(frozen=True)
class ServeConfig:
    """The resolved engine settings (after defaults and validation)."""

    util: float
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int  # -1: auto-fit to the KV cache
    block_size: int = 16
    enforce_eager: bool = False
    tp: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    kv_cache_memory_bytes: int | None = None
    image_limit: int = 999  # images per prompt (``--limit-mm-per-prompt``); vision models only
    image_width: int | None = None  # profiling size hints of the configurable form
    image_height: int | None = None
