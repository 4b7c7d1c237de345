"""Model spec: what autotune knows about a model from its ``config.json`` (never the weights)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import UserError

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # checkpoint dtypes vLLM runs
_LAYERS, _HEADS, _WIDTH = (1, 10_000), (1, 1 << 16), (1, 1 << 20)
_HIDDEN = ("hidden_size", "n_embd", "d_model")
# The config.json numbers ModelSpec computes with: JSON integers in these ranges, checked
# before any arithmetic (a broken or hostile file is one clear line, never a crash or a huge
# allocation). ``autotune.memory.arch`` checks the ones it reads besides.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "num_layers"), _LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "head_dim"), _HEADS),
    **dict.fromkeys(
        ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"), _HEADS
    ),
    **dict.fromkeys(_HIDDEN, _WIDTH),
    "vocab_size": (1, 1 << 26),
    **dict.fromkeys(
        ("max_position_embeddings", "n_positions", "max_sequence_length"), (1, 1 << 31)
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts read from a local ``config.json``.

    ``known`` is False when the model id could not be resolved locally; vLLM may still download
    it, but autotune cannot check lengths or memory and says so (``unknown_reasons``).
    """

    model_id: str
    known: bool
    path: Path | None = None
    architecture: str | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    dtype: str | None = None
    max_position_embeddings: int | None = None
    is_vision: bool = False
    image_tokens: int | None = None  # tokens per image (LLaVA-style: (size / patch)^2)
    config_hash: str | None = None
    revision: str | None = None  # the Hugging Face cache snapshot (commit) the config came from
    quantization: str | None = None  # quantization_config.quant_method of the checkpoint
    unknown_reasons: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """A short, filesystem-safe name for study and profile keys."""
        base = self.model_id.rstrip("/")
        if self.path is not None and Path(base).exists():
            base = Path(base).resolve().name
        return base.replace("/", "--")

    def kv_bytes_per_token(self, *, kv_dtype_bytes: int | None = None, tp: int = 1) -> int | None:
        """Bytes of KV cache per token per GPU for standard attention (vllm-facts §4)."""
        if None in (self.num_layers, self.num_kv_heads, self.head_dim):
            return None
        assert self.num_layers and self.num_kv_heads and self.head_dim
        dtype_bytes = kv_dtype_bytes or {**DTYPE_BYTES, "float8": 1, "fp8": 1}.get(
            self.dtype or "", 2
        )
        heads = max(1, self.num_kv_heads // tp)
        return 2 * self.num_layers * heads * self.head_dim * dtype_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for profiles and study attributes."""
        return {
            "id": self.model_id,
            "known": self.known,
            "architecture": self.architecture,
            "dtype": self.dtype,
            "max_position_embeddings": self.max_position_embeddings,
            "vision": self.is_vision,
            "image_tokens": self.image_tokens,
            "config_hash": self.config_hash,
            "revision": self.revision,
            "quantization": self.quantization,
        }


def hf_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps models: ``HF_HUB_CACHE``, ``HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``)."""
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    hf_home = os.environ.get("HF_HOME") or str(Path(cache_home) / "huggingface")
    dirs.append(Path(hf_home).expanduser() / "hub")
    return dirs


def _find_cached_config(model_id: str) -> Path | None:
    """``config.json`` of a Hugging Face cache entry: the snapshot ``refs/main`` names (the one
    huggingface_hub loads), else the newest snapshot, if present."""
    folder = "models--" + model_id.replace("/", "--")
    for cache in hf_cache_dirs():
        snapshots = cache / folder / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = cache / folder / "refs" / "main"
        try:
            commit = ref.read_text().strip() if ref.is_file() else ""
        except (OSError, UnicodeDecodeError):
            commit = ""
        main = snapshots / commit / "config.json"
        if commit.isalnum() and main.is_file():  # a commit hash, never a path
            return main
        candidates = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
        if candidates:
            return candidates[-1]
    return None


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1


def first_of(cfg: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` that ``cfg`` sets (not None)."""
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return None


def _image_tokens(cfg: dict[str, Any]) -> int | None:
    """Tokens one image becomes in a LLaVA-style model; None where it depends on the image."""
    vision = cfg.get("vision_config")
    if not isinstance(vision, dict):
        return None
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if not isinstance(size, int) or not isinstance(patch, int) or patch <= 0:
        return None
    full = cfg.get("vision_feature_select_strategy") == "full"
    return (size // patch) ** 2 + (1 if full else 0)


def _quantization(cfg: dict[str, Any]) -> str | None:
    quant = cfg.get("quantization_config")
    if not isinstance(quant, dict):
        return None
    method = quant.get("quant_method")
    return str(method) if method else "unknown"


def check_config_numbers(
    cfg: Mapping[str, Any], limits: Mapping[str, tuple[int, int]], *, source: str
) -> None:
    """Each of ``limits`` that ``cfg`` sets (not None) is an integer in its range."""
    for key, (low, high) in limits.items():
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
            raise UserError(f"{source}: {key} = {shown} is not an integer {low}..{high}")


def _check_config(cfg: dict[str, Any], source: str) -> None:
    archs = cfg.get("architectures")
    if archs is not None and not (
        isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    ):
        raise UserError(f"{source}: architectures must be a list of names")
    text = cfg.get("text_config")
    for part in (cfg, text) if isinstance(text, dict) else (cfg,):
        check_config_numbers(part, CONFIG_LIMITS, source=source)
        heads, hidden = first_of(part, "num_attention_heads", "n_head"), first_of(part, *_HIDDEN)
        if heads and hidden and not part.get("head_dim") and hidden < heads:
            raise UserError(f"{source}: hidden_size {hidden} is smaller than the {heads} heads")
        for key in ("torch_dtype", "dtype"):
            if part.get(key) is not None and not isinstance(part[key], str):
                raise UserError(f"{source}: {key} must be a name such as bfloat16")


def _parse_config(
    model_id: str, path: Path | None, config_file: Path, *, revision: str | None = None
) -> ModelSpec:
    raw = config_file.read_bytes()
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{config_file}: expected a JSON object")
    _check_config(cfg, str(config_file))
    archs = cfg.get("architectures") or []
    is_vision = "vision_config" in cfg or any("ConditionalGeneration" in a for a in archs)
    text_config = cfg.get("text_config")
    merged = {**cfg, **text_config} if isinstance(text_config, dict) else cfg
    heads = first_of(merged, "num_attention_heads", "n_head")
    hidden = first_of(merged, *_HIDDEN)
    head_dim = first_of(merged, "head_dim")
    if not head_dim and heads and hidden:
        head_dim = hidden // heads
    kv_heads = first_of(
        merged, "n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"
    )
    return ModelSpec(
        image_tokens=_image_tokens(cfg) if is_vision else None,
        model_id=model_id,
        known=True,
        path=path,
        architecture=archs[0] if archs else None,
        num_layers=first_of(merged, "num_hidden_layers", "n_layer", "num_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads or heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=first_of(merged, "vocab_size"),
        dtype=first_of(merged, "torch_dtype", "dtype") or first_of(cfg, "torch_dtype", "dtype"),
        max_position_embeddings=first_of(
            merged, "max_position_embeddings", "n_positions", "max_sequence_length"
        ),
        is_vision=is_vision,
        config_hash=hashlib.sha256(raw).hexdigest()[:12],
        revision=revision,
        quantization=_quantization(merged) or _quantization(cfg),
    )


def resolve_model(model_id: str) -> ModelSpec:
    """Read the model's spec from a local directory or the Hugging Face cache.

    A local path that does not exist is a user error; a hub id that is not cached is accepted
    and marked unknown.
    """
    expanded = Path(os.path.expanduser(model_id))
    if expanded.is_dir():
        config_file = expanded / "config.json"
        if not config_file.is_file():
            raise UserError(f"model directory {model_id} has no config.json")
        return _parse_config(model_id, expanded, config_file)
    if expanded.exists():
        raise UserError(f"model {model_id} is a file; give the model directory or a hub id")
    if _looks_like_path(model_id):
        raise UserError(f"model directory {model_id} does not exist")
    cached = _find_cached_config(model_id)
    if cached is not None:
        return _parse_config(model_id, cached.parent, cached, revision=cached.parent.name)
    return ModelSpec(
        model_id=model_id,
        known=False,
        unknown_reasons=(
            f"{model_id} is not a local directory or in the Hugging Face cache: its context "
            "length, layers and dtype are not checked (vLLM may download it at launch)",
        ),
    )
