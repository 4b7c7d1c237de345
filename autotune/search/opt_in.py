"""Opt-in dimensions (``--tune NAME``): vLLM flags with a few values, never tuned by default.

- ``kv-cache-dtype``: ``--kv-cache-dtype auto|fp8``; fp8 stores a KV token in one byte (about
  twice the KV cache) and changes outputs, so a profile that uses it carries a warning.
- ``prefix-caching``: ``--enable-prefix-caching`` / ``--no-enable-prefix-caching``.
- ``chunked-prefill``: ``--enable-chunked-prefill`` / ``--no-enable-chunked-prefill``; without
  it vLLM needs ``max_num_batched_tokens >= max_model_len`` (other candidates are skipped).

vLLM's default is each dimension's first choice (the study's first, enqueued trial).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from autotune.engine.settings import CHUNKED, KV_DTYPE
from autotune.errors import UserError
from autotune.search.space import Dim, SearchSpace

OPT_IN: dict[str, Dim] = {
    "kv-cache-dtype": Dim(name=KV_DTYPE, low=0, high=1, choices=("auto", "fp8")),
    "prefix-caching": Dim(name="enable_prefix_caching", low=0, high=1, choices=(True, False)),
    "chunked-prefill": Dim(name=CHUNKED, low=0, high=1, choices=(True, False)),
}


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
