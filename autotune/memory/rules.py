"""Learn from failures by their class and skip candidates that are known to fail, without
launching them (the monotone structure of failures; the calibrated memory model is in
``autotune.search.screen``).

Each class has its own direction (never carry one class's rule to another):
- a profiling OOM, no memory for the KV cache, or a KV cache too small for max_model_len at some
  memory setting: every candidate that needs at least as much (max_num_batched_tokens,
  max_num_seqs, dummy images or the image limit, max_model_len all at least as large; for an
  encoder-profiling OOM the dummy image count alone) at the same or lower utilization (or KV
  bytes) fails too;
- free memory below the requested utilization: the same or higher utilization fails too;
- an OOM capturing CUDA graphs: the same or higher utilization with at least as many capture
  sizes fails too (before the KV cache was allocated, also with batches at least as large).
Nothing is said about the other side of a cliff: the best configuration often sits right below
a capture cliff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autotune.engine.multimodal import image_count, profiled_images
from autotune.engine.outcome import Outcome, StartupInfo
from autotune.memory.estimates import capture_sizes

_MEMORY = ("gpu_memory_utilization", "kv_cache_memory_bytes")
_DOWN = (Outcome.OOM_PROFILING, Outcome.NO_KV_CACHE, Outcome.KV_TOO_SMALL)
_UP = (Outcome.FREE_MEMORY, Outcome.OOM_CUDA_GRAPHS)
_BATCH = ("max_num_batched_tokens", "max_num_seqs")


@dataclass(frozen=True)
class Known:
    """A failure that was observed, with what it predicts."""

    trial: int
    outcome: Outcome
    args: dict[str, Any]
    images: int | None  # dummy images vLLM profiled (from its log, else vLLM's rule)
    after_kv: bool = False  # the KV cache was sized before it failed (graph capture phase)


def _physical(k: Known) -> bool:
    """An out-of-memory error in the profiling run or the CUDA-graph estimate: the device itself
    could not hold weights, activations and graphs, before the memory setting sized anything
    (vLLM profiles on the real device), so no memory setting avoids it for as large batches."""
    return k.outcome is Outcome.OOM_PROFILING or (
        k.outcome is Outcome.OOM_CUDA_GRAPHS and not k.after_kv
    )


def _memory(args: Mapping[str, Any]) -> tuple[str, float] | None:
    for name in _MEMORY:
        if name in args:
            return name, float(args[name])
    return None


def _at_least(args: Mapping[str, Any], known: Mapping[str, Any], keys: Iterable[str]) -> bool:
    """Every key both have is at least as large in ``args``; a key only one has fails."""
    return all(
        (key in args) == (key in known) and (key not in args or args[key] >= known[key])
        for key in keys
    )


def graph_count(args: Mapping[str, Any]) -> int | None:
    """CUDA graph capture sizes a candidate's batch settings give (vllm-facts §2.2)."""
    if any(key not in args for key in _BATCH):
        return None
    seqs, tokens = int(args["max_num_seqs"]), int(args["max_num_batched_tokens"])
    return len(capture_sizes(max_num_seqs=seqs, max_num_batched_tokens=tokens))


class FailureRules:
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
        self,
        *,
        trial: int,
        outcome: Outcome,
        args: Mapping[str, Any],
        images: int | None,
        after_kv: bool = False,
    ) -> None:
        if outcome in _DOWN or outcome in _UP:
            seen = images if images is not None else self.images_for(args)
            self.known.append(
                Known(trial=trial, outcome=outcome, args=dict(args), images=seen, after_kv=after_kv)
            )

    def learn_launch(self, *, trial: int, outcome: str | None, args: Mapping[str, Any],
                     startup: StartupInfo) -> None:  # fmt: skip
        """Learn from one launched trial: its outcome (a value of ``Outcome``; others are
        ignored), arguments and what its startup log said."""
        try:
            known = Outcome(outcome)
        except ValueError:
            return
        self.learn(
            trial=trial,
            outcome=known,
            args=args,
            images=startup.profiled_images,
            after_kv=startup.kv_cache_tokens is not None,
        )

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        """Class rules predict no capacity (``search.screen.MemoryScreen`` does)."""
        return None

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
            at = f"{name}={args[name]}"
            if _physical(k) and (reason := self._dominates(args, k)):
                return (
                    f"predicted {k.outcome.value}: {reason} (trial {k.trial}; out of memory "
                    f"before the KV cache is sized, at any {name})"
                )
            if k.outcome is Outcome.FREE_MEMORY and value >= known_memory[1]:
                return (
                    f"predicted {k.outcome.value}: {at} is at least the "
                    f"{k.args[name]} that trial {k.trial} could not get"
                )
            up = k.outcome is Outcome.OOM_CUDA_GRAPHS and value >= known_memory[1]
            if up and (reason := self._more_graphs(args, k)):
                return f"predicted {k.outcome.value}: {reason} at {at} >= {k.args[name]}"
            down = k.outcome in _DOWN and value <= known_memory[1]
            if down and (reason := self._dominates(args, k)):
                return (
                    f"predicted {k.outcome.value}: {reason} at {at} <= "
                    f"{k.args[name]} (trial {k.trial})"
                )
        return None

    def _more_graphs(self, args: Mapping[str, Any], k: Known) -> str | None:
        mine, theirs = graph_count(args), graph_count(k.args)
        if mine is None or theirs is None or mine < theirs:
            return None
        if not k.after_kv and not self._dominates(args, k, length=False):
            return None  # the estimate pass also holds the activations: batches must cover too
        return f"{mine} >= {theirs} CUDA graph sizes (trial {k.trial})"

    def _dominates(self, args: Mapping[str, Any], k: Known, *, length: bool = True) -> str | None:
        """Does the candidate need at least as much memory as the failed trial?"""
        keys = ("max_model_len",) if length else ()
        if k.outcome is Outcome.OOM_PROFILING and k.images:  # the encoder's dummy images decide
            mine = self.images_for(args)
            if mine is not None and mine >= k.images and _at_least(args, k.args, keys):
                return f"profiles {mine} >= {k.images} dummy images"
            return None
        if not _at_least(args, k.args, (*_BATCH, *keys)):
            return None
        mine, theirs = self.images_for(args), k.images
        if theirs and (mine is None or mine < theirs):
            return None
        limit, known_limit = image_count(dict(args)), image_count(k.args)
        if known_limit is not None and (limit is None or limit < known_limit):
            return None
        return "needs at least as much memory" if keys else "batches at least as large"
