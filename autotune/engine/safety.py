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
from autotune.masking import redact as redact  # secret masking lives in autotune.masking
from autotune.masking import redact_url as redact_url
from autotune.masking import strip_secrets as strip_secrets

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
# Where the server listens: set by autotune for every trial, the user's only when serving.
LISTEN_FLAGS = frozenset({"--host", "--port", "--uds"})


def _check_value(name: str, kind: str, value: Any, source: str) -> None:
    bad = f"{source}: vllm_args.{name} = {value!r} is outside vLLM's limits"
    if kind == "fraction":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
            raise UserError(bad + " (0 < value <= 1)")
    elif kind == _POSITIVE_INT:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 50:
            raise UserError(bad + " (an integer 1..2**50)")
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
        flag = _split(arg)[0]
        if _is_flag(arg) and flag not in EXTRA_FLAGS:
            raise UserError(
                f"{source}: extra_args has {_show(flag)}, which a profile may not carry "
                "(pass it yourself after -- if you mean it)"
            )
    _check_args(list(extra_args), source=f"{source}: extra_args")


# Flags a prefix or an underscore spelling resolves to, as vLLM's argparse resolves them (`_`
# becomes `-`; then an exact name, else the one known flag it begins). A subset of vLLM's own
# flags holding every flag autotune tunes: a spelling that reaches a tuned flag in vLLM reaches
# it here too, and one that is ambiguous here is ambiguous in vLLM.
_OTHER_FLAGS = frozenset(
    {
        "--model", "--tokenizer", "--tokenizer-mode", "--revision", "--code-revision",
        "--tokenizer-revision", "--trust-remote-code", "--download-dir", "--config",
        "--served-model-name", "--api-key", "--hf-token", "--hf-overrides", "--chat-template",
        "--generation-config", "--override-generation-config", "--compilation-config",
        "--speculative-config", "--kv-transfer-config", "--kv-events-config",
        "--data-parallel-size", "--distributed-executor-backend", "--enable-expert-parallel",
        "--enable-lora", "--max-loras", "--max-lora-rank", "--max-cpu-loras", "--max-logprobs",
        "--max-long-partial-prefills", "--long-prefill-token-threshold",
        "--max-parallel-loading-workers", "--num-gpu-blocks-override", "--disable-log-stats",
        "--disable-custom-all-reduce", "--enable-sleep-mode", "--model-impl",
        "--mm-processor-kwargs", "--allowed-local-media-path", "--ssl-keyfile", "--ssl-certfile",
        "--enable-auto-tool-choice", "--tool-call-parser", "--reasoning-parser",
        "--calculate-kv-scales", "--uvicorn-log-level", "--root-path",
    }
)  # fmt: skip
_TUNED_FLAGS = frozenset(
    f"--{prefix}{name.replace('_', '-')}"
    for name, kind in TUNED_ARGS.items()
    for prefix in (("", "no-") if kind == "boolean" else ("",))
)
KNOWN_FLAGS = frozenset(
    f for f in (*_TUNED_FLAGS, *EXTRA_FLAGS, *LISTEN_FLAGS, *_OTHER_FLAGS) if f.startswith("--")
)
# Flags that take no value (store_true, BooleanOptionalAction) and flags that take several.
_NO_VALUE_PREFIXES = ("--no-", "--enable-", "--disable-", "--skip-")
_NO_VALUE_FLAGS = frozenset(
    {"--enforce-eager", "--async-scheduling", "--trust-remote-code", "--calculate-kv-scales",
     "--help", "-h", "--version"}
)  # fmt: skip
_MANY_VALUES_FLAGS = frozenset(
    {"--cudagraph-capture-sizes", "--cuda-graph-sizes", "--served-model-name", "--api-key",
     "--middleware"}
)  # fmt: skip
# -O and --compilation-config take JSON that can name paths: only a plain level passes.
_LEVEL_FLAGS = frozenset({"-O", "--compilation-config", "-cc", "--optimization-level"})
_LEVELS = frozenset({"0", "1", "2", "3"})
_REFUSED_VALUES = {"--load-format": frozenset({"dummy"})}  # random weights: nothing to measure
_NUMBER = re.compile(r"-\.?\d[\d.]*(?:[eE][-+]?\d+)?")
MAX_PARALLEL_SIZE = 1024


def _show(text: str, limit: int = 60) -> str:
    """``text`` fit for a one-line message: printable and short."""
    shown = text if text.isprintable() else repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _is_flag(arg: str) -> bool:
    """An option (``-tp``, ``--dtype=half``), not a value (``-1``) nor ``--``."""
    return arg.startswith("-") and arg != "--" and len(arg) > 1 and not _NUMBER.fullmatch(arg)


def _split(arg: str) -> tuple[str, str, str]:
    """``(flag, "=", value)`` of an option; ``-O3`` and ``-O.level=3`` are ``-O`` and a value."""
    if arg.startswith("-O") and len(arg) > 2 and arg[2] != "=":
        return "-O", "=", arg[2:]
    return arg.partition("=")


def canonical_flag(flag: str) -> str:
    """``flag`` spelt out as vLLM's argparse reads it: ``--max_num_seqs`` and ``--max-num-seq``
    are ``--max-num-seqs``; a prefix of several known flags is an error."""
    if not flag.startswith("--") or flag == "--":
        return flag
    name = "--" + flag[2:].replace("_", "-")
    if name in KNOWN_FLAGS:
        return name
    found = sorted(f for f in KNOWN_FLAGS if f.startswith(name))
    if len(found) > 1:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise UserError(f"{_show(flag)} is ambiguous: it could be {shown}; spell the flag out")
    return found[0] if found else name


def canonical_args(args: Sequence[str]) -> list[str]:
    """``args`` with every flag spelt out (:func:`canonical_flag`); values as they are."""
    out: list[str] = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        out.append(canonical_flag(flag) + eq + value if _is_flag(arg) else arg)
    return out


def check_user_args(args: Sequence[str]) -> list[str]:
    """The user's arguments for vLLM (after ``--``), every flag spelt out, or one clear line for
    what must not reach the engine: a NUL byte, a positional argument, an ambiguous flag, ``-O``
    or ``--compilation-config`` other than a plain level 0-3, ``--load-format dummy``, or a
    parallel size that is not a positive integer."""
    for arg in args:
        if "\0" in arg:
            raise UserError(f"argument {_show(arg)} after -- has a NUL byte")
    canonical = canonical_args(args)
    _check_args(canonical, source="after --")
    return canonical


def _check_args(args: list[str], *, source: str) -> None:
    taken = 0  # values the last flag may still take: 0, 1, or -1 for any number
    for arg in args:
        if "\0" in arg:
            raise UserError(f"{source}: {_show(arg)} has a NUL byte")
        if not _is_flag(arg):
            if taken == 0:
                raise UserError(
                    f"{source}: {_show(arg)} is a positional argument; only flags may be given "
                    "(the model is autotune's MODEL)"
                )
            taken -= taken > 0
            continue
        flag, eq, _ = _split(arg)
        no_value = flag in _NO_VALUE_FLAGS or flag.startswith(_NO_VALUE_PREFIXES)
        taken = 0 if eq or no_value else (-1 if flag in _MANY_VALUES_FLAGS else 1)
    for i, arg in enumerate(args):
        if not _is_flag(arg):
            continue
        flag, eq, value = _split(arg)
        if not eq:
            following = args[i + 1] if i + 1 < len(args) else ""
            value = "" if _is_flag(following) else following
        base = flag.split(".", 1)[0]  # -O.level=3, --compilation-config.mode=3
        if base in _LEVEL_FLAGS and (base != flag or value not in _LEVELS):
            raise UserError(
                f"{source}: {_show(arg if eq else f'{arg} {value}')}: only a plain "
                "optimization level 0-3 may be given (no JSON: it can name files)"
            )
        if value.lower() in _REFUSED_VALUES.get(flag, ()):
            raise UserError(f"{source}: {flag} {value} is refused (random weights measure nothing)")
    parallel_sizes(args)


_PARALLEL_FLAGS = {
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "-pp": "pipeline_parallel_size",
}


def parallel_sizes(args: Sequence[str]) -> dict[str, int]:
    """Tensor and pipeline parallel sizes set among ``args`` (the last one wins, as in vLLM);
    sizes not given are left out. A size that is not an integer 1..1024 is an error."""
    sizes: dict[str, int] = {}
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        flag = canonical_flag(flag) if _is_flag(arg) else flag
        if flag not in _PARALLEL_FLAGS:
            continue
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        size = int(value) if re.fullmatch(r"[+-]?[0-9]{1,9}", value.strip()) else None
        if size is None or not 1 <= size <= MAX_PARALLEL_SIZE:
            raise UserError(
                f"{flag} {_show(value)}: expected an integer, 1..{MAX_PARALLEL_SIZE} GPUs"
            )
        sizes[_PARALLEL_FLAGS[flag]] = size
    return sizes


def api_key(args: Sequence[str], env: Mapping[str, str]) -> str | None:
    """The key the engine will demand of every ``/v1`` request: the first value of the last
    ``--api-key`` (vLLM takes several), else ``VLLM_API_KEY`` from its environment."""
    key: str | None = None
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag == "--api-key":
            following = args[i + 1] if i + 1 < len(args) else ""
            key = value if eq else (None if following.startswith("-") else following)
    return key or env.get("VLLM_API_KEY") or None


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
