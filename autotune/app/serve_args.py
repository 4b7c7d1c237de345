"""What ``serve`` makes of vLLM's own flags: given as autotune options they choose the profile
(``Requirement``); given after ``--`` they override a tuned value or change memory or numerics
the profile was measured without (``review_extra``: a warning, or refused under ``--strict``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from autotune.engine.defaults import Value
from autotune.engine.multimodal import IMAGE_DIM, LIMIT_ARG, image_count
from autotune.engine.safety import TUNED_ARGS, canonical_flag
from autotune.errors import UserError
from autotune.profiles.store import Profile
from autotune.search.ranges import parse_range

__all__ = ["MEASURED_FLAGS", "Requirement", "requirements", "review_extra"]
log = logging.getLogger(__name__)

# ``V`` (one value) for these asks at least V (the context, the concurrency, the images a
# request may carry) or at most V (the memory the engine may reserve); ``LOW:HIGH`` asks for a
# value inside the range. ``--max-num-batched-tokens`` takes a range only.
AT_LEAST = ("max_model_len", "max_num_seqs", IMAGE_DIM)
AT_MOST = ("gpu_memory_utilization", "kv_cache_memory_bytes")
RANGE_ONLY = ("max_num_batched_tokens",)
# Flags after ``--`` that change memory or numerics: a profile measured without them says so.
MEASURED_FLAGS = frozenset(
    {"--kv-cache-dtype", "--quantization", "--dtype", "--tensor-parallel-size",
     "--pipeline-parallel-size", "--enforce-eager", "--no-enforce-eager", "--block-size",
     "--cpu-offload-gb"}
)  # fmt: skip
_SHORT = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size"}
_PARALLEL = {"--tensor-parallel-size": "tensor_parallel_size", "--pipeline-parallel-size": (
    "pipeline_parallel_size")}  # fmt: skip
_NO_VALUE = frozenset({"--enforce-eager", "--no-enforce-eager"})


def _flag(name: str) -> str:
    return "--" + (LIMIT_ARG if name == IMAGE_DIM else name).replace("_", "-")


@dataclass(frozen=True)
class Requirement:
    """A tuned value the served profile must have: ``low <= value <= high`` (None: open)."""

    name: str  # the dimension (``max_model_len``, ``image_limit``)
    low: Value | None
    high: Value | None

    def value(self, args: Mapping[str, Any]) -> Value | None:
        """The profile's value for this dimension (None: it does not set it)."""
        if self.name == IMAGE_DIM:
            return image_count(dict(args))
        found = args.get(self.name)
        return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None

    def met(self, args: Mapping[str, Any]) -> bool:
        value = self.value(args)
        if value is None:
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        name = _flag(self.name).removeprefix("--").replace("-", "_")
        if self.low is not None and self.high is not None:
            return f"{name} {self.low:g}..{self.high:g}"
        return f"{name} >= {self.low:g}" if self.low is not None else f"{name} <= {self.high:g}"


def requirements(ranges: Mapping[str, str | None]) -> tuple[Requirement, ...]:
    """The profile requirements of vLLM flags given to ``serve`` as options (see ``AT_LEAST``,
    ``AT_MOST``); one line for a value that cannot choose a profile."""
    found: list[Requirement] = []
    for name, text in ranges.items():
        if text is None:
            continue
        low, high = parse_range(name, text)
        if ":" in text:
            found.append(Requirement(name, low, high))
        elif name in AT_LEAST:
            found.append(Requirement(name, low, None))
        elif name in AT_MOST:
            found.append(Requirement(name, None, high))
        else:
            flag = _flag(name)
            raise UserError(
                f"{flag} {text} does not choose a profile (give a range LOW:HIGH for that); to "
                f"override the profile's value pass it to vLLM after --: -- {flag} {text}"
            )
    return tuple(found)


def _pairs(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(flag, value)`` of each flag among the user's arguments (spelt out; None: no value)."""
    pairs: list[tuple[str, str | None]] = []
    for i, arg in enumerate(args):
        if not arg.startswith("-") or arg == "--" or arg[1:2].isdigit() or arg[1:2] == ".":
            continue
        flag, eq, value = arg.partition("=")
        with suppress(UserError):  # ambiguous: the caller checked the user's arguments already
            flag = _SHORT.get(flag, canonical_flag(flag))
        following = args[i + 1] if i + 1 < len(args) else None
        takes = not (flag in _NO_VALUE or flag.startswith(("--no-", "--enable-")))
        if not eq and (not takes or following is None or following.startswith("--")):
            pairs.append((flag, None))
        else:
            pairs.append((flag, value if eq else following))
    return pairs


def _tuned_name(flag: str) -> str | None:
    """The tuned argument a flag sets (``--no-enable-prefix-caching``: enable_prefix_caching)."""
    for name in TUNED_ARGS:
        if flag in ("--" + name.replace("_", "-"), "--no-" + name.replace("_", "-")):
            return name
    return None


def review_extra(profile: Profile, extra: Sequence[str], *, strict: bool) -> Profile:
    """``profile`` without the tuned values the user's arguments after ``--`` override (vLLM is
    given each flag once); a warning per override and per memory or numerics flag the profile
    was measured without, or one line under ``strict``."""
    saved = dict(_pairs(profile.extra_args))
    dropped: list[str] = []
    for flag, value in _pairs(extra):
        shown = flag if value is None else f"{flag} {value}"
        name = _tuned_name(flag)
        if name is not None and name in profile.vllm_args:
            tuned = profile.vllm_args[name]
            dropped.append(name)  # given once: the user's
            if _same(tuned, value, flag):
                continue
            why = f"{shown} after -- overrides the profile's tuned {name} {tuned}"
            _say(why + "; the profile was measured with the tuned value", strict=strict)
        elif flag in MEASURED_FLAGS or name is not None:
            if flag in _PARALLEL and str(profile.parallel.get(_PARALLEL[flag], 1)) == value:
                continue  # the profile was matched under this size
            if flag in saved and saved[flag] == value:
                continue  # tuned with it
            before = f" (it was measured with {flag} {saved[flag]})" if saved.get(flag) else ""
            _say(f"{shown} after --: the profile was measured without it{before}", strict=strict)
    if not dropped:
        return profile
    args = {k: v for k, v in profile.vllm_args.items() if k not in dropped}
    return replace(profile, vllm_args=args)


def _same(tuned: Any, value: str | None, flag: str) -> bool:
    """The user's value is the tuned one (``--enable-prefix-caching`` and True, 64 and "64")."""
    if value is None or isinstance(tuned, bool):
        return value is None and tuned is not flag.startswith("--no-")
    try:
        return float(value) == float(tuned)
    except (TypeError, ValueError):
        return value == str(tuned)


def _say(text: str, *, strict: bool) -> None:
    if strict:
        raise UserError(f"{text} (refused under --strict: drop it, or serve without --strict)")
    log.warning(f"{text}: its throughput and memory are not what was measured")
