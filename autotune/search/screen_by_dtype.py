"""The study's memory knowledge across opt-in settings: one ``MemoryScreen`` per KV cache
dtype when ``--tune kv-cache-dtype`` searches it (bytes per token, block geometry and the
failure rules all differ), and the rule that skips a candidate without chunked prefill whose
batch is shorter than its context."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autotune.engine.settings import KV_DTYPE, unchunked_too_short
from autotune.hardware import Hardware
from autotune.memory.setup import engine_flags
from autotune.model import ModelSpec
from autotune.search.screen import MemoryScreen
from autotune.search.space import SearchSpace
from autotune.trial.record import TrialRecord


class DtypeScreens:
    """``MemoryScreen`` per KV cache dtype; each candidate is answered, and each launch
    learned, by the one of its own dtype."""

    def __init__(self, by_dtype: Mapping[str, MemoryScreen], *, default: str) -> None:
        self.by_dtype, self.default = dict(by_dtype), default
        self.prescreen = all(k.prescreen for k in self.by_dtype.values())

    @classmethod
    def build(
        cls,
        *,
        spec: ModelSpec,
        hardware: Hardware,
        space: SearchSpace,
        extra_args: Sequence[str] = (),
        prescreen: bool = True,
    ) -> DtypeScreens:
        default = engine_flags(extra_args).kv_cache_dtype
        dtypes = [default]
        if KV_DTYPE in space:
            dtypes = [str(c) for c in space[KV_DTYPE].choices]
            default = dtypes[0]
        by_dtype = {
            dtype: MemoryScreen.build(
                spec=spec,
                hardware=hardware,
                extra_args=[*extra_args, "--kv-cache-dtype", dtype],
                prescreen=prescreen,
            )
            for dtype in dtypes
        }
        return cls(by_dtype, default=default)

    def _of(self, args: Mapping[str, Any]) -> MemoryScreen:
        dtype = str(args.get(KV_DTYPE, self.default))
        return self.by_dtype.get(dtype, self.by_dtype[self.default])

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None:
        groups: dict[int, list[tuple[int, TrialRecord]]] = {}
        for number, record in trials:
            key = id(self._of(record.vllm_args))
            groups.setdefault(key, []).append((number, record))
        for knowledge in self.by_dtype.values():
            knowledge.learn_all(groups.get(id(knowledge), []))

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None:
        self._of(record.vllm_args).learn_trial(trial=trial, record=record)

    def check(self, args: Mapping[str, Any]) -> str | None:
        why = unchunked_too_short(args) if self.prescreen else None
        return why or self._of(args).check(args)

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        return self._of(args).predict_kv_tokens(args)

    def memory_edge(self, args: Mapping[str, Any]) -> float | None:
        return self._of(args).memory_edge(args)
