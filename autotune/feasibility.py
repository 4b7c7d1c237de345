"""Learn from failures by their class and skip candidates that are known to fail, without
launching them.

Each class has its own direction (never carry one class's rule to another):
- a profiling OOM (the encoder's dummy images, the dummy forward) at some memory setting means
  every candidate that profiles at least as many images, with at least as large batches, at the
  same or lower utilization (or KV bytes) fails too;
- free memory below the requested utilization means the same or higher utilization fails too.
CUDA-graph capture OOMs near the top of the range predict nothing about lower utilizations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autotune.multimodal import image_count, profiled_images
from autotune.outcome import Outcome

_MEMORY = ("gpu_memory_utilization", "kv_cache_memory_bytes")


@dataclass(frozen=True)
class Known:
    """A failure that was observed, with what it predicts."""

    trial: int
    outcome: Outcome
    args: dict[str, Any]
    images: int | None  # dummy images vLLM profiled (from its log, else vLLM's rule)


def _memory(args: Mapping[str, Any]) -> tuple[str, float] | None:
    for name in _MEMORY:
        if name in args:
            return name, float(args[name])
    return None


class Prescreen:
    """Failures seen so far in a study; ``check`` says why a candidate would fail, if it would."""

    def __init__(self, *, image_tokens: int | None) -> None:
        self.image_tokens = image_tokens
        self.known: list[Known] = []

    def images_for(self, args: Mapping[str, Any]) -> int | None:
        """Dummy images vLLM would profile for these arguments (None if not computable)."""
        limit = image_count(dict(args))
        needed = ("max_num_seqs", "max_num_batched_tokens", "max_model_len")
        if limit is None or not self.image_tokens or any(k not in args for k in needed):
            return None
        return profiled_images(
            image_tokens=self.image_tokens,
            limit=limit,
            max_num_seqs=int(args["max_num_seqs"]),
            max_num_batched_tokens=int(args["max_num_batched_tokens"]),
            max_model_len=int(args["max_model_len"]),
        )

    def learn(
        self, *, trial: int, outcome: Outcome, args: Mapping[str, Any], images: int | None
    ) -> None:
        if outcome in (Outcome.OOM_PROFILING, Outcome.FREE_MEMORY):
            seen = images if images is not None else self.images_for(args)
            self.known.append(Known(trial=trial, outcome=outcome, args=dict(args), images=seen))

    def learn_all(self, trials: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Rebuild from a resumed study: (trial number, user attributes) pairs."""
        for number, attrs in trials:
            if attrs.get("launched") and attrs.get("outcome") and attrs.get("vllm_args"):
                try:
                    outcome = Outcome(attrs["outcome"])
                except ValueError:
                    continue
                startup = attrs.get("startup") or {}
                self.learn(
                    trial=number,
                    outcome=outcome,
                    args=attrs["vllm_args"],
                    images=startup.get("profiled_images"),
                )

    def check(self, args: Mapping[str, Any]) -> str | None:
        """The reason this candidate is known to fail, or None."""
        memory = _memory(args)
        if memory is None:
            return None
        name, value = memory
        for k in self.known:
            known_memory = _memory(k.args)
            if known_memory is None or known_memory[0] != name:
                continue
            if k.outcome is Outcome.FREE_MEMORY and value >= known_memory[1]:
                return (
                    f"predicted {k.outcome.value}: {name}={args[name]} is at least the "
                    f"{k.args[name]} that trial {k.trial} could not get"
                )
            if k.outcome is Outcome.OOM_PROFILING and value <= known_memory[1]:
                reason = self._dominates(args, k)
                if reason:
                    return (
                        f"predicted oom_profiling: {reason} at {name}={args[name]} <= "
                        f"{k.args[name]} (trial {k.trial})"
                    )
        return None

    def _dominates(self, args: Mapping[str, Any], k: Known) -> str | None:
        """Does the candidate need at least as much profiling memory as the failed trial?"""
        if k.images:  # an encoder-profiling failure: the dummy image count decides
            mine = self.images_for(args)
            if mine is not None and mine >= k.images:
                return f"profiles {mine} >= {k.images} dummy images"
            return None
        keys = ("max_num_batched_tokens", "max_num_seqs")
        if all(key in args and key in k.args and args[key] >= k.args[key] for key in keys):
            return "batches at least as large"
        return None
