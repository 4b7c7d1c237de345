"""Opt-in dimensions (``--tune NAME``): vLLM flags with a few values, never tuned by default.

- ``kv-cache-dtype``: ``--kv-cache-dtype auto|fp8``; fp8 stores a KV token in one byte (about
  twice the KV cache) and changes outputs, so a profile that uses it carries a warning.
- ``prefix-caching``: ``--enable-prefix-caching`` / ``--no-enable-prefix-caching``.
- ``chunked-prefill``: ``--enable-chunked-prefill`` / ``--no-enable-chunked-prefill``; without
  it vLLM needs ``max_num_batched_tokens >= max_model_len`` (other candidates are skipped).

vLLM's default is each dimension's first choice (the study's first, enqueued trial).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autotune.errors import UserError
from autotune.outcome import Outcome
from autotune.space import Dim, SearchSpace

KV_DTYPE = "kv_cache_dtype"
CHUNKED = "enable_chunked_prefill"
OPT_IN: dict[str, Dim] = {
    "kv-cache-dtype": Dim(name=KV_DTYPE, low=0, high=1, choices=("auto", "fp8")),
    "prefix-caching": Dim(name="enable_prefix_caching", low=0, high=1, choices=(True, False)),
    "chunked-prefill": Dim(name=CHUNKED, low=0, high=1, choices=(True, False)),
}
FP8_WARNING = "fp8 KV cache: outputs can differ from the model's own dtype; check quality"


def flags(dim: Dim) -> tuple[str, ...]:
    """The command-line flags that set ``dim`` (a boolean's ``--no-`` form too)."""
    if all(isinstance(c, bool) for c in dim.choices):
        return (dim.flag, "--no-" + dim.flag.removeprefix("--"))
    return (dim.flag,)


def with_opt_in(
    space: SearchSpace, names: Iterable[str], *, extra_args: Sequence[str] = ()
) -> SearchSpace:
    """``space`` with the dimensions ``--tune`` names; one given after ``--`` too is an error."""
    dims = []
    for name in dict.fromkeys(names):
        if name not in OPT_IN:
            raise UserError(f"--tune {name}: choose from {', '.join(OPT_IN)}")
        dim = OPT_IN[name]
        given = [a for a in extra_args if a.split("=", 1)[0] in flags(dim)]
        if given:
            raise UserError(f"{given[0]} after --: --tune {name} searches it; give one of them")
        dims.append(dim)
    return replace(space, dims=(*space.dims, *dims)) if dims else space


def widest_kv_flags(space: SearchSpace) -> list[str]:
    """Engine flags for the largest KV cache the space can reach (fp8 when it is tuned)."""
    if KV_DTYPE in space and not space[KV_DTYPE].fixed:
        return ["--kv-cache-dtype", "fp8"]
    return []


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


def output_warnings(vllm_args: Iterable[Mapping[str, Any]]) -> list[str]:
    """Warnings for tuned settings that change outputs (any of the profile's configurations)."""
    fp8 = any(str(args.get(KV_DTYPE, "")).startswith("fp8") for args in vllm_args)
    return [FP8_WARNING] if fp8 else []
