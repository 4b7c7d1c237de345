"""How many GPUs one engine runs on: the one tensor-parallel decision that ``tune`` (one worker or
``--gpus``) and ``serve``/``profiles show|export|verify`` (``app.lookup``) share, so that ``serve``
looks a profile up under the layout ``tune`` saved it with.

1. ``-tp``/``--tensor-parallel-size`` after ``--`` wins.
2. A lookup (not ``tune``): a profile in the store for this model, hardware and vLLM release under
   some tensor-parallel size is evidence that the layout fits. One GPU when such a profile exists,
   else the smallest group that has one.
3. Else the memory model (``Need``): the smallest power of two at which one GPU holds the weights,
   the engine's other memory at the smallest batch settings the study tries and one request of
   the shortest context it accepts, at the top of the utilization range (0.98, the user's
   ``--gpu-memory-utilization`` high, or ``--memory-budget``). vLLM starts when that fits, so no
   other margin is added. One GPU when the memory model cannot say (no ``config.json``, an
   architecture it does not model) and on the CPU backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from autotune.app.options import TuneOptions
from autotune.app.prepare import hardware_for
from autotune.engine.defaults import Value
from autotune.engine.safety import parallel_sizes
from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.memory.setup import base_model, engine_flags
from autotune.model import ModelSpec, resolve_model
from autotune.search.goal import parse_budget
from autotune.search.ranges import parse_range
from autotune.search.space import DEFAULT_RANGES
from autotune.units import GIB

__all__ = ["Layout", "Need", "decide", "for_tune", "needed_tensor_parallel"]
log = logging.getLogger(__name__)

TP = "tensor_parallel_size"
MAX_TP = 64
DEFAULT_LEN = 4096  # the shortest context a study accepts without --min-model-len (space_build)


@dataclass(frozen=True)
class Layout:
    """GPUs per engine and the extra arguments that say so (``--tensor-parallel-size N`` added
    when decided here), and what decided it."""

    tensor_parallel: int
    extra_args: tuple[str, ...]
    source: Literal["given", "profile", "memory", "one"]


@dataclass(frozen=True)
class Need:
    """The least one engine must hold to start as the study can run it: weights, the other
    non-KV memory at the smallest batch settings, and one ``min_model_len`` request's KV cache,
    within ``utilization`` of the GPU."""

    utilization: float = float(DEFAULT_RANGES["gpu_memory_utilization"][1])
    max_num_seqs: int = int(DEFAULT_RANGES["max_num_seqs"][0])
    max_num_batched_tokens: int = int(DEFAULT_RANGES["max_num_batched_tokens"][0])
    min_model_len: int | None = None  # None: 4096, or the model's maximum when shorter

    @classmethod
    def of(cls, options: TuneOptions, *, memory_gib: float) -> Need:
        """The top of the options' utilization range (lowered to ``--memory-budget``) and the
        low ends of their batch ranges: what the study's search space will hold."""
        top = float(_range(options, "gpu_memory_utilization")[1])
        budget = parse_budget(options.memory_budget, total_gib=memory_gib)
        return cls(
            utilization=top if budget is None else min(top, budget),
            max_num_seqs=int(_range(options, "max_num_seqs")[0]),
            max_num_batched_tokens=int(_range(options, "max_num_batched_tokens")[0]),
            min_model_len=options.min_model_len,
        )

    def request_tokens(self, spec: ModelSpec) -> int:
        longest = spec.max_position_embeddings
        shortest = self.min_model_len or min(DEFAULT_LEN, longest or DEFAULT_LEN)
        return min(shortest, longest) if longest else shortest


def _range(options: TuneOptions, name: str) -> tuple[Value, Value]:
    text = options.ranges.get(name)
    return parse_range(name, text) if text else DEFAULT_RANGES[name]


def needed_tensor_parallel(
    *, spec: ModelSpec, hardware: Hardware, extra_args: Sequence[str], need: Need
) -> tuple[int, str] | None:
    """The smallest power-of-two tensor-parallel size at which one GPU of ``hardware`` holds
    ``need`` by the memory model, and a line saying why when it is more than one; None when the
    memory model cannot say."""
    one = replace(hardware, count=1)
    tokens = need.request_tokens(spec)
    tp, why = 1, ""
    while tp <= MAX_TP:
        flags = replace(engine_flags(extra_args), tp=tp)
        found = base_model(
            spec=spec,
            hardware=one,
            flags=flags,
            max_num_seqs=need.max_num_seqs,
            max_num_batched_tokens=need.max_num_batched_tokens,
        )
        if found is None:
            return None
        model = found[0]
        if model.fits(utilization=need.utilization, max_model_len=tokens):
            return tp, why
        if tp == 1:
            other = model.non_kv_bytes - model.weights_bytes
            why = (
                f"one {one.gpu_name} cannot hold the weights ({model.weights_bytes / GIB:.1f} "
                f"GiB), the engine's other memory ({other / GIB:.1f} GiB) and one {tokens}-token "
                f"request within gpu_memory_utilization {need.utilization:g} "
                f"({need.utilization * one.memory_gib:.1f} GiB)"
            )
        tp *= 2
    return None  # not even MAX_TP GPUs: leave it to vLLM's own error


def decide(
    *,
    spec: ModelSpec,
    hardware: Hardware,
    extra_args: tuple[str, ...],
    need: Need,
    stored: Callable[[], Sequence[int]] = tuple,
) -> Layout:
    """The tensor-parallel size of one engine (see the module's rules). ``hardware``: the
    machine's kind of GPU; ``stored``: the sizes under which the profile store holds a profile
    that the lookup would use (asked only when the user gave none; ``tune`` asks no store)."""
    given = parallel_sizes(extra_args).get(TP)
    if given:
        return Layout(given, extra_args, "given")
    if hardware.is_cpu:
        return Layout(1, extra_args, "one")
    sizes = sorted(set(stored()))
    if sizes:
        return _layout(1 if 1 in sizes else sizes[0], extra_args, "profile")
    found = needed_tensor_parallel(spec=spec, hardware=hardware, extra_args=extra_args, need=need)
    if found is None:
        return Layout(1, extra_args, "one")
    tp, why = found
    if tp > 1:
        log.info(f"{why}: --tensor-parallel-size {tp}, {tp} GPUs per engine")
    return _layout(tp, extra_args, "memory")


def _layout(tp: int, extra_args: tuple[str, ...], source: Literal["profile", "memory"]) -> Layout:
    extra = extra_args if tp == 1 else (*extra_args, "--tensor-parallel-size", str(tp))
    return Layout(tp, extra, source)


def for_tune(options: TuneOptions) -> Layout:
    """The layout ``tune`` runs every launch with (``decide`` without the store): the same as a
    lookup decides when the store has no profile for this model and hardware."""
    extra = options.extra_args
    if given := parallel_sizes(extra).get(TP):
        return Layout(given, extra, "given")  # nothing to resolve
    try:
        spec = resolve_model(options.model)
        machine = hardware_for(options.gpu, options.device, options.vllm_cmd)
        need = Need.of(options, memory_gib=machine.memory_gib)
    except UserError:
        return Layout(1, extra, "one")  # preparing the study says what is wrong, in one line
    return decide(spec=spec, hardware=machine, extra_args=extra, need=need)
