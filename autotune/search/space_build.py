"""Building a study's search space: vLLM's memory dimension for the device, the default ranges
or the user's, the model's context limits, image limits for a vision model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from autotune.engine.multimodal import IMAGE_DIM, LIMIT_ARG, image_range
from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.model import ModelSpec
from autotune.search.ranges import parse_range
from autotune.search.space import (
    CPU_RANGES,
    DEFAULT_RANGES,
    MEMORY_DIMS,
    TUNED,
    Dim,
    SearchSpace,
)
from autotune.units import GIB


def _memory_dim(hardware: Hardware, overrides: Mapping[str, str | None]) -> str:
    """The CPU backend tunes KV bytes; a GPU tunes utilization unless KV bytes are given."""
    util, kv = (overrides.get(n) is not None for n in MEMORY_DIMS)
    if hardware.is_cpu and util:
        raise UserError(
            "--gpu-memory-utilization: on vLLM's CPU backend the KV cache is sized in bytes; "
            "use --kv-cache-memory-bytes"
        )
    if util and kv:
        raise UserError("give --gpu-memory-utilization or --kv-cache-memory-bytes, not both")
    return "kv_cache_memory_bytes" if hardware.is_cpu or kv else "gpu_memory_utilization"


def build_space(
    *,
    spec: ModelSpec,
    hardware: Hardware,
    overrides: Mapping[str, str | None],
    min_model_len: int | None = None,
    min_images: int | None = None,
    images_max: bool = False,
    image_size_hint: tuple[int, int] | None = None,
) -> SearchSpace:
    """The default ranges, re-ranged or fixed by the user's ``--flag LOW:HIGH`` / ``--flag V``.

    Vision models add the image limit (``limit_mm_per_prompt``): at least ``min_images``, up to
    16, or with ``images_max`` (which looks for the largest count that fits) up to the images
    the longest context holds, at most 64 (``engine.multimodal.image_range``)."""
    memory = _memory_dim(hardware, overrides)
    vision = spec.is_vision or overrides.get(IMAGE_DIM) is not None
    if not vision and (min_images or images_max):
        raise UserError(f"{spec.model_id} is not a vision model: image options do not apply")
    ranges = dict(DEFAULT_RANGES)
    if hardware.is_cpu:
        ranges.update(CPU_RANGES)
        kv_high = min(8 * GIB, int(hardware.memory_gib * GIB / 4))
        ranges["kv_cache_memory_bytes"] = (min(256 << 20, kv_high), kv_high)
    elif memory == "kv_cache_memory_bytes":
        ranges["kv_cache_memory_bytes"] = (GIB, int(hardware.memory_gib * GIB * 0.9))
    dims: list[Dim] = []
    for name in TUNED:
        if (name in MEMORY_DIMS and name != memory) or (name == IMAGE_DIM and not vision):
            continue
        text = overrides.get(name)
        if text is not None:
            low, high = parse_range(name, text)
        elif name == IMAGE_DIM:
            length = next((d.high for d in dims if d.name == "max_model_len"), None)
            low, high = image_range(
                low=min_images or 1,
                most=images_max,
                image_tokens=spec.image_tokens,
                max_model_len=int(length) if length else spec.max_position_embeddings,
            )
        elif name == "max_model_len":
            model_max = spec.max_position_embeddings
            if model_max is None:
                continue  # unknown model: leave the length to vLLM, and say so elsewhere
            low = min(min_model_len or min(4096, model_max), model_max)
            high = model_max
        else:
            low, high = ranges[name]
        is_float = name == "gpu_memory_utilization"
        log = not is_float and name != IMAGE_DIM
        arg = LIMIT_ARG if name == IMAGE_DIM else None
        dims.append(Dim(name=name, low=low, high=high, is_float=is_float, log=log, arg=arg))
    if vision and min_images and dims[-1].low < min_images:
        raise UserError(
            f"--limit-mm-per-prompt {dims[-1].describe()} is below --min-images {min_images}"
        )
    space = SearchSpace(dims=tuple(dims), image_size=image_size_hint if vision else None)
    return _check(space, spec=spec, min_model_len=min_model_len)


def _check(space: SearchSpace, *, spec: ModelSpec, min_model_len: int | None) -> SearchSpace:
    model_max = spec.max_position_embeddings
    if "max_model_len" in space and model_max is not None:
        dim = space["max_model_len"]
        if dim.high > model_max:
            raise UserError(
                f"--max-model-len {dim.describe()}: above the model's maximum "
                f"({model_max} from max_position_embeddings in config.json)"
            )
    if min_model_len is not None and model_max is not None and min_model_len > model_max:
        raise UserError(f"--min-model-len {min_model_len}: above the model's maximum {model_max}")
    if "max_num_seqs" in space and "max_num_batched_tokens" in space:
        seqs, tokens = space["max_num_seqs"], space["max_num_batched_tokens"]
        if seqs.low > tokens.high:
            raise UserError(
                f"--max-num-seqs {seqs.describe()} needs --max-num-batched-tokens of at least "
                f"{seqs.low} (vLLM requires max_num_batched_tokens >= max_num_seqs)"
            )
        if seqs.high > tokens.high:  # keep every candidate valid
            dims = tuple(replace(d, high=tokens.high) if d is seqs else d for d in space.dims)
            space = replace(space, dims=dims)
    return space


def bound_max_num_seqs(space: SearchSpace, *, cap: int, keep: int) -> SearchSpace:
    """``max_num_seqs`` up to ``cap`` (the requests the KV cache can hold, see
    ``autotune.memory.setup.seqs_cap``): more sequences than that only add CUDA graphs and sampler
    memory. Never below ``keep`` (vLLM's default) when the range holds it, nor below the range's
    low end."""
    dim = space["max_num_seqs"]
    floor = keep if dim.low <= keep <= dim.high else dim.low
    high = min(dim.high, max(cap, floor))
    dims = tuple(replace(d, high=high) if d is dim else d for d in space.dims)
    return replace(space, dims=dims)
