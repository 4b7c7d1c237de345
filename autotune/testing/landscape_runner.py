"""``LandscapeRunner``: a ``TrialRunner`` that answers from ``FakeTruth`` instead of launching the
fake engine, so autotune's real study loop runs on it in milliseconds per trial."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from autotune.engine.launcher import ArgValue
from autotune.load.metrics import Metrics
from autotune.load.request import Request
from autotune.testing._fake_model import speed_factor
from autotune.testing.landscape import FakeTruth
from autotune.trial.runner import TrialResult, TrialRunner


@dataclass(frozen=True, kw_only=True)
class LandscapeRunner(TrialRunner):
    """A ``TrialRunner`` that answers from ``FakeTruth`` instead of launching the fake engine.

    ``write_logs``: also write the engine log each trial would have left (off: no files).
    Under ``AUTOTUNE_FAKE_NOISE`` each run's speed is drawn as a launch of the fake would draw
    it (``speed_factor``), from a generator seeded with ``seed``; ``FakeTruth`` stays exact."""

    truth: FakeTruth
    write_logs: bool = False
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    command: Sequence[str] = ()
    model: str = "model"
    requests: Sequence[Request] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rng", random.Random(self.seed))

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        on_phase("starting engine (in-process ground truth)")
        st = self.truth.startup(args)
        if st.failure is not None:
            self._stop_on_user_error(st.failure)  # model not found / the user's invalid flags
        result = self.truth.result(args, log_path=log_path)
        if self.truth.env.noise > 0 and result.metrics is not None:
            factor = speed_factor(self.truth.env.noise, self._rng)
            result = replace(result, metrics=scaled(result.metrics, speed=factor))
        if self.write_logs:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(f"$ {json.dumps(dict(args))}\n{st.log}")
        return result if result.log_path == log_path else replace(result, log_path=log_path)


_RATES = ("request_throughput", "output_throughput", "total_token_throughput")


def scaled(metrics: Metrics, *, speed: float) -> Metrics:
    """A benchmark's metrics on an engine ``speed`` times as fast: rates times ``speed``,
    durations and latencies divided by it."""
    changes: dict[str, Any] = {}
    for f in fields(metrics):
        value = getattr(metrics, f.name)
        if f.name in _RATES:
            changes[f.name] = value * speed
        elif f.name == "duration_s" or f.name.endswith(tuple(f"_p{p}" for p in (50, 95, 99))):
            changes[f.name] = value / speed
    return replace(metrics, **changes)
