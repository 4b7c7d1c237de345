"""Long prompts: where one prompt takes the best configuration ``kv_fit.CHUNKS`` engine steps or
more to prefill and more sequences gained nothing, the guide tries larger prefill chunks before
sizing the sequences again (``moves.kv_fit.prefill`` first); and a fill among configurations
of equal value starts from the one with the most memory (its KV cache holds the most)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autotune.engine.defaults import Value
from autotune.engine.launcher import ArgValue
from autotune.engine.outcome import Outcome, StartupInfo
from autotune.search import study as st
from autotune.search.moves.edge import Tried
from autotune.search.moves.guide import Guide
from autotune.search.moves.kv_fit import DECODE, chunks_bind, fill
from autotune.search.moves.load_shape import Load
from autotune.trial.record import TrialRecord
from autotune.trial.runner import TrialResult
from tests.search.test_edge import SPACE as EDGE_SPACE
from tests.search.test_predicted_crash import Still, kv_tokens
from tests.search.test_remeasure import SPACE, Quiet, Recording, metrics

SMALL: dict[str, Value] = {
    "gpu_memory_utilization": 0.9, "max_num_seqs": 8, "max_num_batched_tokens": 512,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Idle(Recording):
    """Serves with a KV cache of ``kv_tokens`` (the toy model), never a third used."""

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        self.launched.append(dict(args))
        return TrialResult(
            outcome=Outcome.OK, reason="", args=dict(args), log_path=log_path,
            metrics=metrics(100.0), startup=StartupInfo(kv_cache_tokens=kv_tokens(args)),
            preemptions=0, peak_kv_cache_usage_pct=30.0, peak_requests_running=8,
            peak_requests_waiting=0,
        )  # fmt: skip


def _next_move(tmp_path: Path, *, prompt_tokens: int, more_seqs: bool) -> str:
    """The source of the guide's move after the smallest batches served at 0.9 and 0.98 (so
    the climb has nothing left), and, with ``more_seqs``, twice the sequences as fast."""
    study = st.open_study(name="long", storage=optuna.storages.InMemoryStorage(), seed=3)
    load = Load(request_tokens=prompt_tokens + 200, in_flight=64, prompt_tokens=prompt_tokens)
    enqueue = [SMALL | {"gpu_memory_utilization": 0.98}]
    enqueue += [SMALL | {"max_num_seqs": 16}] if more_seqs else []
    plan = st.StudyPlan(
        study=study, space=SPACE, runner=Idle(), budget=len(enqueue) + 1,
        log_dir=tmp_path / "logs", default_params=SMALL, enqueue=tuple(enqueue),
        guide=Still(space=SPACE, seed=0),
    )  # fmt: skip
    st.run_study(plan, reporter=Quiet())
    guide = Guide(space=SPACE, seed=0, load=load, kv_tokens=kv_tokens)
    guide.before_ask(study)
    (waiting,) = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return TrialRecord.of(waiting).source


def test_long_prompts_try_larger_chunks_once_more_sequences_gained_nothing(
    tmp_path: Path,
) -> None:
    """8,000-token prompts take 16 steps of 512: once 16 sequences served as fast as 8, larger
    chunks come before sizing the sequences again; not before, and not for short prompts."""
    move = partial(_next_move, tmp_path)
    assert move(prompt_tokens=8000, more_seqs=True).startswith("prefill:")
    assert move(prompt_tokens=8000, more_seqs=False).startswith("fill:")
    assert move(prompt_tokens=200, more_seqs=True).startswith("fill:")


def test_a_fill_among_equal_values_starts_from_the_most_memory() -> None:
    def served(util: float, kv: int) -> Tried:
        params: dict[str, Any] = SMALL | {"gpu_memory_utilization": util}
        return Tried(params=params, outcome="ok", value=100.0, kv_cache_tokens=kv)

    move = fill(
        space=EDGE_SPACE, tried=[served(0.9, 10_000), served(0.95, 40_000)],
        request_tokens=1000, most=64,
    )  # fmt: skip
    assert move is not None and move.params["max_num_seqs"] == 40
    assert move.params["gpu_memory_utilization"] == 0.95


def test_decode_tokens_taking_a_share_of_each_step_put_larger_chunks_first() -> None:
    """vLLM gives each step's ``max_num_batched_tokens`` to the running requests' decode tokens
    first: where the best ran ``DECODE`` of its chunk as sequences, short prompts too are
    prefilled slowly, and larger chunks come before more sequences; not where fewer ran."""

    def best(running: int) -> list[Tried]:
        params: dict[str, Any] = SMALL | {"max_num_seqs": 128}
        return [Tried(params=params, outcome="ok", value=100.0, peak_running=running)]

    bind = partial(chunks_bind, space=EDGE_SPACE, prompt_tokens=100)
    assert bind(tried=best(int(DECODE * 512) + 1))
    assert not bind(tried=best(int(DECODE * 512) - 1))
