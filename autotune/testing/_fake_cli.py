"""The fake engine's command line: ``vllm serve`` flags, their defaults and P0 checks.

Bad values raise ``ConfigError`` with pydantic's ValidationError text, as vLLM prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from autotune.testing._fake_model import ModelInfo, ServeConfig


class ConfigError(Exception):
    """A P0 configuration error; the message is the pydantic-style text."""


def _human_int(value: str) -> int:
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([kmgKMG]?)\s*", value)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}")
    return int(float(match[1]) * units[match[2]])


def _model_len(value: str) -> int:
    return -1 if value == "auto" else _human_int(value)


def _json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Value {value} cannot be converted to {json.loads}."
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` flags, named like ``vllm serve``'s."""
    p = argparse.ArgumentParser(
        prog="vllm serve",
        usage="vllm serve [model_tag] [options]",
        description="A fake engine that imitates `vllm serve` (autotune's test double).",
    )
    add = p.add_argument
    add("model_tag")
    add("--host", default="0.0.0.0")
    add("--port", type=int, default=8000)
    add("--gpu-memory-utilization", type=float, default=0.92)
    add("--max-num-seqs", type=int)
    add("--max-model-len", type=_model_len)
    add("--max-num-batched-tokens", type=_human_int)
    add("--dtype", default="auto")
    add("--kv-cache-dtype", default="auto")
    add("--kv-cache-memory-bytes", type=_human_int)
    add("--block-size", type=int, default=16)
    add("--enforce-eager", action="store_true")
    add("--tensor-parallel-size", "-tp", type=int, default=1)
    add("--served-model-name", nargs="+")
    add("--seed", type=int)
    add("--trust-remote-code", action="store_true")
    add("--enable-prefix-caching", action=argparse.BooleanOptionalAction)
    add("--enable-chunked-prefill", action=argparse.BooleanOptionalAction)
    add("--limit-mm-per-prompt", type=_json_arg)
    add("--load-format", default="auto")
    add("--api-key")
    add("--uvicorn-log-level", default="info")
    add("--disable-uvicorn-access-log", action="store_true")
    add("--max-log-len", type=int)
    add("--generation-config", default="auto")
    return p


def _pydantic(cls: str, errors: list[tuple[str, str, str, str]]) -> str:
    """Format (field, message, type, input) tuples like pydantic's ValidationError."""
    n = len(errors)
    lines = [f"pydantic_core._pydantic_core.ValidationError: {n} validation error"]
    lines[0] += f"{'s' if n > 1 else ''} for {cls}"
    for loc, msg, kind, given in errors:
        lines += [loc] if loc else []
        lines.append(f"  {msg} [type={kind}, {given}]")
        lines.append(f"    For further information visit https://errors.pydantic.dev/2.12/v/{kind}")
    return "\n".join(lines)


_OPTIONS = {  # modality -> (vLLM's DummyOptions class, fields besides count; None: any, ignored)
    "image": ("ImageDummyOptions", ("width", "height")),
    "video": ("VideoDummyOptions", ("num_frames", "width", "height")),
    "audio": ("AudioDummyOptions", ("length",)),
}


def _int_error(field: str, value: Any, bound: int) -> tuple[str, str, str, str] | None:
    """pydantic's lax int check with ``ge=0`` (count) or ``gt=0`` (sizes); None if valid."""
    given = f"input_value={value!r}, input_type={type(value).__name__}"
    if value is None and field != "count":
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    loc = f"limit_per_prompt.{field}"
    if isinstance(value, float):
        msg = "Input should be a valid integer, got a number with a fractional part"
        return (loc, msg, "int_from_float", given)
    if isinstance(value, str):
        msg = "Input should be a valid integer, unable to parse string as an integer"
        return (loc, msg, "int_parsing", given)
    if not isinstance(value, int):
        return (loc, "Input should be a valid integer", "int_type", given)
    if value < bound:
        ge = ("greater_than_equal", "greater than or equal to")
        kind, word = ge if bound == 0 else ("greater_than", "greater than")
        return (loc, f"Input should be {word} 0", kind, given)
    return None


def image_limits(raw: Any) -> tuple[int, int | None, int | None]:
    """``(count, width, height)`` of the image entry, validated like ``MultiModalConfig``."""
    if not isinstance(raw, dict):
        given = f"input_value={raw!r}, input_type={type(raw).__name__}"
        msg = "Input should be a valid dictionary"
        raise ConfigError(
            _pydantic("MultiModalConfig", [("limit_per_prompt", msg, "dict_type", given)])
        )
    image: dict[str, Any] = {"count": 999}
    for modality, value in raw.items():
        cls, fields = _OPTIONS.get(modality, ("BaseDummyOptions", None))
        value = {"count": value} if isinstance(value, int) else value
        if not isinstance(value, dict):
            raise ConfigError(
                f"TypeError: vllm.config.multimodal.{cls}() argument after ** must be a mapping, "
                f"not {type(value).__name__}"
            )
        errors: list[tuple[str, str, str, str]] = []
        for key, item in value.items():
            error: tuple[str, str, str, str] | None = None
            if key == "count" or (fields is not None and key in fields):
                error = _int_error(key, item, 0 if key == "count" else 1)
            elif fields is not None:  # extra="forbid"; BaseDummyOptions ignores extra keys
                given = f"input_value={item!r}, input_type={type(item).__name__}"
                kind = "unexpected_keyword_argument"
                error = (f"limit_per_prompt.{key}", "Unexpected keyword argument", kind, given)
            errors += [error] if error else []
        if errors:
            raise ConfigError(_pydantic("MultiModalConfig", errors))
        if modality == "image":
            image = {"count": 999, **{k: None if v is None else int(v) for k, v in value.items()}}
    return int(image["count"]), image.get("width"), image.get("height")


def resolve_config(ns: argparse.Namespace, m: ModelInfo, total_gib: float) -> ServeConfig:
    """Apply ``vllm serve`` defaults and its P0 checks; raise ``ConfigError`` on bad values."""
    length = ns.max_model_len
    allow_long = os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").lower() in ("1", "true")
    if length is not None and length > m.max_len and not allow_long:
        msg = (
            f"Value error, User-specified max_model_len ({length}) is greater than the derived "
            f"max_model_len (max_position_embeddings={float(m.max_len)} or model_max_length=None "
            "in model's config.json). To allow overriding this maximum, set the env var "
            "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. VLLM_ALLOW_LONG_MAX_MODEL_LEN must be used with "
            "extreme caution. If the model uses relative position encoding (RoPE), positions "
            "exceeding derived_max_model_len lead to nan. If the model uses absolute position "
            "encoding, positions exceeding derived_max_model_len will cause a CUDA array "
            "out-of-bounds error."
        )
        given = f"input_value=ArgsKwargs((), {{'max_model_len': {length}}}), input_type=ArgsKwargs"
        raise ConfigError(_pydantic("ModelConfig", [("", msg, "value_error", given)]))
    util = ns.gpu_memory_utilization
    if not 0 < util <= 1:
        kind, msg = ("greater_than", "greater than 0") if util <= 0 else ("less_than_equal", "")
        msg = msg or "less than or equal to 1"
        given = f"input_value={util}, input_type=float"
        raise ConfigError(
            _pydantic(
                "CacheConfig", [("gpu_memory_utilization", f"Input should be {msg}", kind, given)]
            )
        )
    eff_len = length if length is not None and length > 0 else m.max_len
    tokens_d, seqs_d = (16384, 1024) if total_gib >= 160 else (8192, 1024)
    tokens_d, seqs_d = (tokens_d, seqs_d) if total_gib >= 70 else (2048, 256)
    chunked = ns.enable_chunked_prefill is not False
    mbt, seqs = ns.max_num_batched_tokens, ns.max_num_seqs
    if mbt is None:
        mbt = tokens_d if chunked else max(eff_len, tokens_d)
        mbt = min((seqs_d if seqs is None else seqs) * eff_len, mbt)
    if seqs is None:
        seqs = min(seqs_d, mbt)
    ge1 = [(n, v) for n, v in (("max_num_batched_tokens", mbt), ("max_num_seqs", seqs)) if v < 1]
    errors = [
        (
            n,
            "Input should be greater than or equal to 1",
            "greater_than_equal",
            f"input_value={v}, input_type=int",
        )
        for n, v in ge1
    ]
    given = f"'max_num_batched_tokens': {mbt}, 'max_num_seqs': {seqs}, 'max_model_len': {eff_len}"
    given = f"input_value=ArgsKwargs((), {{{given}}}), input_type=ArgsKwargs"
    if not errors and mbt < seqs:
        msg = f"max_num_batched_tokens ({mbt}) must be greater than or equal to max_num_seqs"
        errors.append(("", f"Value error, {msg} ({seqs}).", "value_error", given))
    elif not errors and not chunked and mbt < eff_len:
        msg = (
            f"Value error, max_num_batched_tokens ({mbt}) is smaller than max_model_len "
            f"({eff_len}). This effectively limits the maximum sequence length to "
            "max_num_batched_tokens and makes vLLM reject longer sequences. Please increase "
            "max_num_batched_tokens or decrease max_model_len."
        )
        errors.append(("", msg, "value_error", given))
    if errors:
        raise ConfigError(_pydantic("SchedulerConfig", errors))
    limit, width, height = 999, None, None
    if m.is_vision and ns.limit_mm_per_prompt is not None:  # a text model ignores the flag
        limit, width, height = image_limits(ns.limit_mm_per_prompt)
    return ServeConfig(
        util=util,
        max_num_seqs=seqs,
        max_num_batched_tokens=mbt,
        max_model_len=-1 if length is not None and length <= 0 else eff_len,
        block_size=ns.block_size,
        enforce_eager=ns.enforce_eager,
        tp=ns.tensor_parallel_size,
        dtype=ns.dtype,
        kv_cache_dtype=ns.kv_cache_dtype,
        kv_cache_memory_bytes=ns.kv_cache_memory_bytes,
        image_limit=limit,
        image_width=width,
        image_height=height,
    )
