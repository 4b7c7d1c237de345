"""Memory-safety soak: the heaviest load a configuration admits, before it is saved.

A configuration that boots can still run out of memory under load (vllm issue #21410). The soak
sends ``max_num_seqs`` requests at once: the workload's longest prompts, a share of them near
``max_model_len``, and the most images per prompt the profile allows for a vision model. It
records peak GPU memory (NVML, when there is one), preemptions and the peak KV-cache usage
(``/metrics``) and errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from autotune.engine.multimodal import image_count
from autotune.engine.outcome import Outcome
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.trial.runner import TrialRunner

NEAR_MAX_SHARE = 0.25  # of the soak's requests have prompts near max_model_len
MAX_SOAK_REQUESTS = 1024
_MARGIN = 16  # tokens left free below max_model_len (chat templates, rounding)


def soak_requests(
    workload: Workload,
    args: Mapping[str, Any],
    *,
    vocab_size: int | None,
    image_tokens: int | None = None,
) -> list[Request]:
    """``max_num_seqs`` requests: the longest of the workload, a share near ``max_model_len``,
    and for a vision workload the most images per prompt that the limit and length allow."""
    count = max(1, min(int(args.get("max_num_seqs") or 256), MAX_SOAK_REQUESTS))
    near = max(1, int(count * NEAR_MAX_SHARE))
    wl = workload
    if wl.images_per_request is not None:
        most = most_images(wl, args, image_tokens)
        wl = replace(wl, images_per_request=(most, most))
    if wl.dataset is not None or wl.lengths_from is not None:
        rows = build_requests(wl, num_prompts=count, vocab_size=vocab_size)
        longest = sorted(rows, key=_length, reverse=True)
    else:
        longest = build_requests(wl, num_prompts=count, vocab_size=vocab_size)
    max_len = args.get("max_model_len")
    long_len = int(max_len) - wl.output_len - _MARGIN if isinstance(max_len, int) else 0
    if long_len < 1 or long_len + wl.output_len <= wl.max_request_tokens:
        return longest
    long_wl = Workload(input_len=long_len, output_len=wl.output_len, seed=wl.seed + 1)
    near_max = build_requests(long_wl, num_prompts=near, vocab_size=vocab_size)
    return near_max + longest[: count - near]


def most_images(workload: Workload, args: Mapping[str, Any], image_tokens: int | None) -> int:
    """The image limit, or fewer when ``max_model_len`` cannot hold that many with the text."""
    low, high = workload.images_per_request or (0, 0)
    limit = image_count(dict(args)) or high
    max_len = args.get("max_model_len")
    if image_tokens and isinstance(max_len, int):
        room = max_len - workload.max_request_tokens - _MARGIN
        limit = min(limit, max(room // image_tokens, 1))
    return max(limit, low)


def _length(request: Request) -> int:
    if request.prompt is not None:
        return len(request.prompt)
    return len(str(request.messages))


@dataclass(frozen=True, kw_only=True)
class SoakVerdict:
    """What the soak of one configuration saw; stored in the study and the profile."""

    passed: bool
    outcome: str
    reason: str
    requests: int
    longest_prompt_tokens: int
    images_per_prompt: int | None
    failed_requests: int
    errors: list[str]
    preemptions: int | None
    peak_memory_gib: float | None
    peak_memory_source: str
    log: str
    trial: int | None = None  # the study's trial whose configuration was soaked
    peak_kv_cache_usage_pct: float | None = None  # vllm:kv_cache_usage_perc x 100 (/metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SoakVerdict:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def run_soak(
    *,
    runner: TrialRunner,
    workload: Workload,
    args: Mapping[str, Any],
    vocab_size: int | None,
    image_tokens: int | None,
    log_path: Path,
    on_phase: Callable[[str], None],
    trial: int | None = None,
) -> SoakVerdict:
    """Launch ``args`` under the worst-case load; the verdict and what was seen."""
    requests = soak_requests(workload, args, vocab_size=vocab_size, image_tokens=image_tokens)
    heavy = replace(
        runner,
        requests=requests,
        warmup=(),
        max_concurrency=None,
        arrivals=None,
        slos={},
        capacity=None,  # the soak is one worst-case run, never a rate search
    )
    result = heavy.run(args=dict(args), log_path=log_path, on_phase=on_phase)
    m = result.metrics
    failed = m.failed if m is not None else len(requests)
    return SoakVerdict(
        passed=result.outcome is Outcome.OK and failed == 0,
        outcome=result.outcome.value,
        reason=result.reason,
        requests=len(requests),
        longest_prompt_tokens=max(_prompt_tokens(requests)),
        images_per_prompt=most_images(workload, args, image_tokens)
        if workload.images_per_request
        else None,
        failed_requests=failed,
        errors=list(result.errors[:3]),
        preemptions=result.preemptions,
        peak_memory_gib=result.peak_memory_gib,
        peak_memory_source="NVML"
        if result.peak_memory_gib is not None
        else "unavailable (no NVML)",
        log=str(log_path),
        trial=trial,
        peak_kv_cache_usage_pct=result.peak_kv_cache_usage_pct,
    )


def _prompt_tokens(requests: Sequence[Request]) -> list[int]:
    return [len(r.prompt) if isinstance(r.prompt, list) else 0 for r in requests] or [0]
