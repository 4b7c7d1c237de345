"""Facts about vLLM settings that several layers need: the names of the opt-in settings, the
rule vLLM applies to a batch without chunked prefill, and settings that change outputs."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autotune.engine.outcome import Outcome

KV_DTYPE = "kv_cache_dtype"
CHUNKED = "enable_chunked_prefill"
FP8_WARNING = "fp8 KV cache: outputs can differ from the model's own dtype; check quality"


def unchunked_too_short(args: Mapping[str, Any]) -> str | None:
    """Why vLLM would reject a candidate without chunked prefill (None: it would not)."""
    if args.get(CHUNKED) is not False or "max_model_len" not in args:
        return None
    tokens, length = args.get("max_num_batched_tokens"), int(args["max_model_len"])
    if tokens is None or int(tokens) >= length:
        return None
    return (
        f"predicted {Outcome.INVALID_CONFIG.value}: without chunked prefill vLLM needs "
        f"max_num_batched_tokens ({tokens}) >= max_model_len ({length})"
    )


def warnings_for(
    extra_args: Sequence[str], *, vllm_args: Iterable[Mapping[str, Any]] = ()
) -> list[str]:
    """Settings that change outputs, said in the profile: given after ``--`` or tuned
    (``vllm_args``: the winner's and its variants')."""
    text = shlex.join(extra_args)
    if "--kv-cache-dtype" in text and "fp8" in text:
        return [FP8_WARNING]
    fp8 = any(str(args.get(KV_DTYPE, "")).startswith("fp8") for args in vllm_args)
    return [FP8_WARNING] if fp8 else []
