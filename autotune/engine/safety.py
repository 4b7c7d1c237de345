"""What a profile may carry into a ``vllm serve`` command line, and what must never be written.

A profile can come from someone else (a shared folder, a repository), so its arguments are
checked against a known set of vLLM flags and vLLM's own limits: a profile cannot smuggle in
``--trust-remote-code`` or a different model. The user's own arguments after ``--`` on the
command line are theirs and still pass. Secrets (API keys, tokens) are never saved or logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autotune.errors import UserError

# vllm_args: name → check of the value.
_POSITIVE_INT = "positive integer"
TUNED_ARGS: dict[str, str] = {
    "gpu_memory_utilization": "fraction",
    "kv_cache_memory_bytes": _POSITIVE_INT,
    "max_num_seqs": _POSITIVE_INT,
    "max_num_batched_tokens": _POSITIVE_INT,
    "max_model_len": _POSITIVE_INT,
    "limit_mm_per_prompt": "image limit",
    "kv_cache_dtype": "kv cache dtype",  # opt-in (--tune)
    "enable_prefix_caching": "boolean",
    "enable_chunked_prefill": "boolean",
}
KV_CACHE_DTYPES = frozenset({"auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"})
# Flags that may be saved among a profile's extra arguments (performance and numerics only).
EXTRA_FLAGS = frozenset(
    {
        "--enforce-eager", "--no-enforce-eager", "--dtype", "--kv-cache-dtype", "--block-size",
        "--enable-prefix-caching", "--no-enable-prefix-caching", "--enable-chunked-prefill",
        "--no-enable-chunked-prefill", "--tensor-parallel-size", "-tp",
        "--pipeline-parallel-size", "-pp", "--max-num-partial-prefills", "--async-scheduling",
        "--performance-mode", "--optimization-level", "-O", "--cudagraph-capture-sizes",
        "--max-cudagraph-capture-size", "--skip-mm-profiling", "--mm-processor-cache-gb",
        "--swap-space", "--cpu-offload-gb", "--seed", "--quantization", "--load-format",
        "--max-seq-len-to-capture", "--scheduling-policy",
    }
)  # fmt: skip
# A flag whose name has one of these words (not `--max-num-batched-tokens`, `--ssl-keyfile`).
_SECRET = re.compile(
    r"(?:^|[-_])(?:key|token|secret|password|passwd|credentials?)(?:$|[-_])", re.IGNORECASE
)
# Where the server listens: set by autotune for every trial, the user's only when serving.
LISTEN_FLAGS = frozenset({"--host", "--port", "--uds"})


def _check_value(name: str, kind: str, value: Any, source: str) -> None:
    bad = f"{source}: vllm_args.{name} = {value!r} is outside vLLM's limits"
    if kind == "fraction":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise UserError(bad + " (0 < value <= 1)")
    elif kind == _POSITIVE_INT:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(bad + " (an integer >= 1)")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise UserError(bad + " (true or false)")
    elif kind == "kv cache dtype":
        if value not in KV_CACHE_DTYPES:
            raise UserError(bad + f" ({', '.join(sorted(KV_CACHE_DTYPES))})")
    else:
        try:
            image = json.loads(str(value))["image"]
            count = image["count"] if isinstance(image, dict) else image
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"{source}: vllm_args.{name} must be JSON like '{{\"image\": 2}}'"
            ) from None
        if not isinstance(count, int) or not 0 <= count <= 999:
            raise UserError(bad + " (image count 0..999)")


def check_profile_args(
    vllm_args: Mapping[str, Any], extra_args: Sequence[str], *, source: str
) -> None:
    """Reject flags outside the known set and values outside vLLM's limits, naming the file."""
    for name, value in vllm_args.items():
        if name not in TUNED_ARGS:
            raise UserError(f"{source}: vllm_args.{name} is not a flag autotune tunes")
        _check_value(name, TUNED_ARGS[name], value, source)
    for arg in extra_args:
        if not isinstance(arg, str):
            raise UserError(f"{source}: extra_args must be strings")
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and flag not in EXTRA_FLAGS:
            raise UserError(
                f"{source}: extra_args has {flag}, which a profile may not carry "
                "(pass it yourself after -- if you mean it)"
            )


_PARALLEL_FLAGS = {
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "-pp": "pipeline_parallel_size",
}


def parallel_sizes(args: Sequence[str]) -> dict[str, int]:
    """Tensor and pipeline parallel sizes set among ``args`` (the last one wins, as in vLLM);
    sizes not given are left out."""
    sizes: dict[str, int] = {}
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in _PARALLEL_FLAGS:
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        try:
            sizes[_PARALLEL_FLAGS[flag]] = int(value)
        except ValueError:
            raise UserError(f"{flag} {value}: expected an integer") from None
    return sizes


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@\s]*@")


def redact_url(url: str) -> str:
    """A storage URL fit for logs: ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _is_secret(flag: str) -> bool:
    return flag.startswith("-") and _SECRET.search(flag.lstrip("-")) is not None


def _drop(args: Sequence[str], flags: Callable[[str], bool]) -> list[str]:
    """``args`` without the flags ``flags`` picks and their values (``--f X`` or ``--f=X``)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        flag, eq, _ = arg.partition("=")
        if flags(flag):
            skip = not eq
            continue
        out.append(arg)
    return out


def without_listen_args(args: Sequence[str]) -> list[str]:
    """``args`` without ``--host``/``--port``/``--uds`` (trials bind 127.0.0.1 on a free port;
    a user's address would make autotune wait on the wrong one). Serving keeps them."""
    return _drop(args, LISTEN_FLAGS.__contains__)


def strip_secrets(args: Sequence[str]) -> list[str]:
    """Drop secret flags and their values (``--api-key X``, ``--hf-token=X``) before saving."""
    return _drop(args, _is_secret)


def redact(args: Sequence[str]) -> list[str]:
    """The same command line with secret values replaced by ``***`` (for logs)."""
    out: list[str] = []
    hide = False
    for arg in args:
        flag, eq, _ = arg.partition("=")
        if hide:
            out.append("***")
            hide = False
        elif _is_secret(flag):
            out.append(f"{flag}=***" if eq else flag)
            hide = not eq
        else:
            out.append(arg)
    return out


def split_extra(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The user's extra arguments a profile may keep, and the ones it may not (with values)."""
    kept: list[str] = []
    dropped: list[str] = []
    target = kept
    for arg in strip_secrets(args):
        if arg.startswith("-"):
            target = kept if arg.split("=", 1)[0] in EXTRA_FLAGS else dropped
        target.append(arg)
    return kept, dropped
