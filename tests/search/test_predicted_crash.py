"""The study loop skips a candidate that would crash under load like a launch that did
(``Guide.crashes``, ``moves.retreat.crashes_again``), unless ``--no-prescreen``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.engine.defaults import Value
from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome
from autotune.search import study as st
from autotune.search.moves.guide import Guide
from autotune.search.moves.load_shape import Load
from autotune.search.screen_rules import ClassScreen
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult
from tests.search.test_remeasure import DEFAULTS, SPACE, Quiet, Recording, metrics


@dataclass(frozen=True, kw_only=True)
class CrashesFrom(Recording):
    """Crashes under load from utilization 0.9 up; serves below."""

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        if float(args["gpu_memory_utilization"]) >= 0.9:
            return TrialResult(
                outcome=Outcome.CRASH_UNDER_LOAD, reason="EngineCore died", args=dict(args),
                log_path=log_path,
            )  # fmt: skip
        return TrialResult(outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
                           metrics=metrics(100.0))  # fmt: skip


class Still(Guide):
    """The guide's knowledge without its moves: only what was enqueued, then the sampler."""

    def before_ask(self, study: Any) -> None:
        return None


def kv_tokens(args: Mapping[str, object]) -> int:
    """A toy memory model: the KV cache grows with the utilization and shrinks with the
    batched tokens (activation memory)."""
    util, batched = args["gpu_memory_utilization"], args["max_num_batched_tokens"]
    assert isinstance(util, float) and isinstance(batched, int)
    return int((util - 0.70) * 1_000_000) - 5 * batched


@pytest.mark.parametrize("prescreen", [True, False])
def test_a_candidate_holding_as_many_tokens_above_a_crash_is_skipped(
    tmp_path: Path, prescreen: bool
) -> None:
    # The defaults crash at 0.9; the same sequences with smaller batched tokens at 0.92 hold
    # a larger KV cache: at least as many tokens running, less room outside the cache.
    after: dict[str, Value] = DEFAULTS | {"gpu_memory_utilization": 0.92}
    after["max_num_batched_tokens"] = 4096
    screen = ClassScreen(image_tokens=None)
    screen.prescreen = prescreen
    runner = CrashesFrom()
    study = st.open_study(name="crash", storage=optuna.storages.InMemoryStorage(), seed=3)
    guide = Still(
        space=SPACE, seed=0, load=Load(request_tokens=1000, in_flight=256), kv_tokens=kv_tokens
    )
    plan = st.StudyPlan(
        study=study, space=SPACE, runner=runner, budget=3, log_dir=tmp_path / "logs",
        default_params=DEFAULTS, enqueue=(after,), guide=guide, prescreen=screen,
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    records = {t.number: TrialRecord.of(t) for t in study.get_trials()}
    assert records[0].outcome == Outcome.CRASH_UNDER_LOAD.value
    second = records[1]
    assert second.params == after
    if prescreen:
        assert second.outcome == Outcome.SKIPPED.value and not second.launched
        assert second.reason.startswith("predicted crash_under_load:"), second.reason
        assert all({k: a.get(k) for k in after} != after for a in runner.launched)
    else:
        assert second.launched and second.outcome == Outcome.CRASH_UNDER_LOAD.value
