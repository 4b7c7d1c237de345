"""The study's memory knowledge: the analytic model of the engine, corrected by every launch, and
the pre-screen that acts on it.

Built from the model's ``config.json``, the hardware and the engine flags passed after ``--``;
``learn_trial`` takes each launched trial's parsed startup numbers (success or failure: the KV
cache size, "Available KV cache memory", the memory breakdown, the estimated maximum model length
of a KV-too-small failure). The block pool's geometry (bytes per token, block size) is confirmed
against the first launch that printed its KV cache; non-KV memory is learned by
``autotune.memory.calibration``. ``check`` rejects a candidate only when it is certain to fail:

- the class rules of ``autotune.memory.rules`` (monotone structure of each failure class);
- the KV cache's upper bound (explicit KV bytes, or the budget minus a certain lower bound on
  non-KV memory) holds fewer blocks than one ``max_model_len`` request plus vLLM's null block.

``--no-prescreen`` keeps the learning and the predictions (``predicted_kv_cache_tokens`` on each
launched trial) but rejects nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from autotune.engine.outcome import Outcome
from autotune.hardware import Hardware
from autotune.memory.arch import Architecture
from autotune.memory.calibration import (
    MARGIN,
    ROUNDING,
    Fit,
    Observation,
    Point,
    activation_floor,
    non_kv_estimate,
    non_kv_floor,
)
from autotune.memory.model import MemoryModel
from autotune.memory.observed import blocks_consistent, gib_bytes, kv_interval
from autotune.memory.rules import FailureRules, graph_count
from autotune.memory.setup import EngineFlags, base_model, calibration_prior, engine_flags
from autotune.model import ModelSpec
from autotune.search.screen_rules import launched, learn_classes
from autotune.trial.record import TrialRecord
from autotune.units import GIB

UTIL, KV_BYTES = "gpu_memory_utilization", "kv_cache_memory_bytes"
_BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048)


class MemoryScreen:
    """What the study knows about memory; ``check`` and ``predict_kv_tokens`` answer for a
    candidate's vLLM arguments, ``learn_trial`` takes a launched trial's user attributes."""

    def __init__(
        self,
        *,
        base: MemoryModel | None,
        arch: Architecture | None,
        image_tokens: int | None,
        flags: EngineFlags | None = None,
        prescreen: bool = True,
    ) -> None:
        self.classes = FailureRules(image_tokens=image_tokens)
        self.base, self.arch, self.prescreen = base, arch, prescreen
        self.flags = flags or EngineFlags()
        self.pool = base  # block geometry and total memory, corrected by launches
        self.geometry_known = False
        self.launches: list[tuple[int, TrialRecord]] = []
        self.fit: Fit | None = None
        self._refresh()

    @classmethod
    def build(
        cls, *, spec: ModelSpec, hardware: Hardware, extra_args: Sequence[str] = (),
        prescreen: bool = True,
    ) -> MemoryScreen:  # fmt: skip
        flags = engine_flags(extra_args)
        found = base_model(spec=spec, hardware=hardware, flags=flags)
        base, arch = found if found is not None else (None, None)
        return cls(base=base, arch=arch, image_tokens=spec.image_tokens, flags=flags,
                   prescreen=prescreen)  # fmt: skip

    # --- learning ---------------------------------------------------------------------------

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None:
        """Rebuild from a resumed study: (trial number, record) of every trial."""
        known = {number for number, _ in self.launches}
        for number, record in trials:
            if launched(record) and number not in known:
                learn_classes(self.classes, trial=number, record=record)
                self.launches.append((number, record))
        self._refresh()

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None:
        learn_classes(self.classes, trial=trial, record=record)
        self.launches.append((trial, record))
        self._refresh()

    def _refresh(self) -> None:
        if self.base is None or self.arch is None:
            return
        totals = [gib_bytes(r.startup.total_gib) for _, r in self.launches]
        total = next((t for t in reversed(totals) if t), None)
        pool = self.base
        if total is not None and abs(total - pool.total_bytes) > ROUNDING:
            pool = replace(pool, total_bytes=total)
        self.pool, self.geometry_known = self._geometry(pool)
        weights = [gib_bytes(r.startup.weights_gib) for _, r in self.launches]
        known = next((w for w in reversed(weights) if w), None)
        observations = [o for o in map(self._observation, self.launches) if o is not None]
        prior = calibration_prior(self.base, arch=self.arch, tp=self.flags.tp, weights=known)
        self.fit = Fit(prior, observations=observations)

    def _kv_samples(self) -> list[tuple[int, int, int | None, int | None, int | None]]:
        """(KV bytes low, high, reported tokens, max_model_len, estimated max length)."""
        out = []
        for _, record in self.launches:
            s, args = record.startup, record.vllm_args
            kv = kv_interval(args, s)
            est = record.estimated_max_model_len or None
            if kv is not None and (s.kv_cache_tokens or est):
                out.append((*kv, s.kv_cache_tokens, args.get("max_model_len"), est))
        return out

    def _geometry(self, pool: MemoryModel) -> tuple[MemoryModel, bool]:
        """The block size (and, failing that, bytes per token) the launches' KV lines confirm."""
        samples = self._kv_samples()
        if not samples or pool.kv_windows != (None,):
            return pool, False
        logged = [r.startup.block_size for _, r in self.launches]
        first = [b for b in logged if b] + [pool.block_size]
        for bs in dict.fromkeys([*first, *_BLOCK_SIZES]):
            candidate = replace(pool, block_size=int(bs))
            if all(blocks_consistent(candidate, *sample) for sample in samples):
                return candidate, True
        lo, hi, tokens, _, _ = samples[0]  # the analytic bytes per token is off: measure it
        if tokens:
            return replace(pool, kv_bytes_per_token=max(1, round((lo + hi) / 2 / tokens))), False
        return pool, False

    def _observation(self, launch: tuple[int, TrialRecord]) -> Observation | None:
        trial, record = launch
        s, args = record.startup, record.vllm_args
        point = self.point(args, images=s.profiled_images)
        if point is None or self.pool is None:
            return None
        non_kv = None
        kv = kv_interval(args, s) if UTIL in args else None
        if kv is not None:
            lo, hi = kv
            if self.geometry_known:  # whole blocks narrow the interval
                bpb = self.pool.bytes_per_block
                blocks = self._blocks(s.kv_cache_tokens, args, record)
                if blocks is not None and lo <= (blocks + 1) * bpb - 1 and blocks * bpb <= hi:
                    lo, hi = max(lo, blocks * bpb), min(hi, (blocks + 1) * bpb - 1)
            budget = math.ceil(float(args[UTIL]) * self.pool.total_bytes)
            non_kv = (budget - hi, budget - lo)
        return Observation(
            trial=trial,
            point=point,
            non_kv=non_kv,
            consumed=gib_bytes(s.consumed_gib),
            peak=gib_bytes(s.peak_activation_gib),
            graph_bytes=gib_bytes(s.cuda_graph_gib),
        )

    def _blocks(self, tokens: Any, args: Mapping[str, Any], record: TrialRecord) -> int | None:
        assert self.pool is not None
        bs, est = self.pool.block_size, record.estimated_max_model_len
        if est:
            return int(est) // bs + 1
        if not tokens:
            return None
        length = args.get("max_model_len")
        if int(tokens) % bs == 0 or not length:
            return int(tokens) // bs
        per_request = self.pool.blocks_per_request(int(length))
        return round(int(tokens) * per_request / int(length))

    # --- answers ----------------------------------------------------------------------------

    def point(self, args: Mapping[str, Any], *, images: int | None = None) -> Point | None:
        """The non-KV memory settings of a candidate (None when its batch sizes are unknown)."""
        if "max_num_batched_tokens" not in args or "max_num_seqs" not in args:
            return None
        seen = images if images is not None else self.classes.images_for(args)
        return Point(
            tokens=int(args["max_num_batched_tokens"]),
            seqs=int(args["max_num_seqs"]),
            images=seen or 0,
            graphs=0 if self.flags.eager else graph_count(args) or 0,
        )

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        """KV cache tokens (whole blocks) the engine would report for these arguments."""
        kv = self._kv_estimate(args)
        if kv is None or self.pool is None:
            return None
        return max(0, kv // self.pool.bytes_per_block) * self.pool.block_size

    def _kv_estimate(self, args: Mapping[str, Any]) -> int | None:
        if self.pool is None or self.fit is None:
            return None
        if KV_BYTES in args:
            return int(args[KV_BYTES])
        point = self.point(args)
        if point is None or UTIL not in args:
            return None
        budget = math.ceil(float(args[UTIL]) * self.pool.total_bytes)
        return int(budget - non_kv_estimate(point, fit=self.fit))

    def memory_edge(self, args: Mapping[str, Any]) -> float | None:
        """The highest utilization these batch settings are expected to start at (a guess for
        the edge climb, never a reason to reject): the free memory at startup, less what CUDA
        graph capture took beyond vLLM's own estimate in earlier launches (it is outside the
        budget), scaled to these settings' capture sizes; never below a utilization that
        settings with as many capture sizes or more served at, nor, for more, below it less
        that overshoot for the sizes added (activations are profiled inside the reservation:
        larger batched tokens shrink the KV cache, not this edge)."""
        free, total = self._latest("free_gib"), self.pool.total_bytes if self.pool else None
        if free is None or not total:
            return None
        per_size, over = 0.0, 0.0
        for _, record in self.launches:
            s, count = record.startup, graph_count(record.vllm_args)
            est, actual = gib_bytes(s.cuda_graph_gib), gib_bytes(s.cuda_graph_actual_gib)
            if est and count:
                per_size = max(per_size, est / count)
                if actual:
                    over = max(over, (actual - est) / est)
        graphs = 0 if self.flags.eager else graph_count(args) or 0
        served = [  # a launch that served, less the overshoot of the capture sizes it lacked
            float(r.vllm_args[UTIL])
            - over * per_size * max(graphs - (graph_count(r.vllm_args) or 0), 0) / total
            for _, r in self.launches
            if r.ok and UTIL in r.vllm_args
        ]
        return max([(free - over * per_size * graphs) / total, *served])

    def check(self, args: Mapping[str, Any]) -> str | None:
        """Why this candidate cannot start, when that is certain; None otherwise."""
        if not self.prescreen:
            return None
        return self.classes.check(args) or self._capacity(args) or self._profiling(args)

    def _latest(self, key: str, pick: Any = None) -> int | None:
        """A startup number over the launches (bytes): the latest, or ``pick`` of them all."""
        seen = [g for _, r in self.launches if (g := gib_bytes(getattr(r.startup, key)))]
        return (pick(seen) if pick else seen[-1]) if seen else None

    def _profiling(self, args: Mapping[str, Any]) -> str | None:
        """The dummy forward needs more than the device had free at startup: weights and
        non-torch memory (at least the weights) plus a certain lower bound on the peak."""
        point, fit = self.point(args), self.fit
        free = self._latest("free_gib", max)
        fixed = self._latest("consumed_gib") or self._latest("weights_gib")
        if point is None or fit is None or free is None or fixed is None:
            return None
        peak = activation_floor(point, fit=fit)
        if peak is None or fixed + peak <= free + MARGIN:
            return None
        return (
            f"predicted {Outcome.OOM_PROFILING.value}: weights and non-torch memory "
            f"({fixed / GIB:.2f} GiB) plus a peak activation of at least {peak / GIB:.2f} GiB "
            f"exceed the {free / GIB:.2f} GiB free at startup (model calibrated on "
            f"{len(fit.measured)} launches)"
        )

    def _capacity(self, args: Mapping[str, Any]) -> str | None:
        pool, fit = self.pool, self.fit
        if pool is None or fit is None or not self.geometry_known:
            return None
        if KV_BYTES in args:
            kv, why = int(args[KV_BYTES]), "set by kv_cache_memory_bytes"
        else:
            point = self.point(args)
            floor = non_kv_floor(point, fit=fit) if point is not None and UTIL in args else None
            if floor is None:
                return None
            kv = math.ceil(float(args[UTIL]) * pool.total_bytes) - floor[0]
            why = f"non-KV memory {floor[0] / GIB:.2f} GiB at least, {floor[1]}"
        blocks = max(0, kv // pool.bytes_per_block)
        length = args.get("max_model_len")
        tokens = int(args.get("max_num_batched_tokens") or pool.max_num_batched_tokens)
        batch = replace(pool, max_num_batched_tokens=tokens)
        need = batch.blocks_per_request(int(length)) + 1 if length else 2
        if blocks >= need:
            return None
        cls = Outcome.NO_KV_CACHE if blocks < 2 else Outcome.KV_TOO_SMALL
        wants = f"max_model_len {length} needs {need}" if length else f"vLLM needs {need}"
        return (
            f"predicted {cls.value}: at most {blocks} KV cache blocks of {pool.block_size} "
            f"tokens fit ({kv / GIB:.2f} GiB: {why}); {wants}"
        )
