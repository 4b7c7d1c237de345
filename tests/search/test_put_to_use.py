"""More memory put to use: where the KV cache bound a configuration (preemptions, a full cache)
and the same batch settings with more memory ran more requests at once or preempted fewer,
vLLM's counters say the extra memory served; a noisy slower run of it is no contradiction.
The guide values it at least as high (so the climb goes on from it), the re-check does not
measure the pair again, and the choice puts it where the other would rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.engine.outcome import Outcome
from autotune.search import best
from autotune.search.goal import Goal
from autotune.search.moves import recheck
from autotune.search.moves.alike import put_to_use
from autotune.search.moves.edge import Tried
from autotune.search.moves.seen import tried
from autotune.search.ranking import candidates, rank
from autotune.trial.record import TrialRecord
from tests.search.test_alike import MEMORY, Counted, Counters, _study
from tests.search.test_remeasure import SPACE

LOW = {MEMORY: 0.90, "max_num_seqs": 256, "max_num_batched_tokens": 2048}


def _served(util: float, *, running: int, preempted: int, kv: float = 99.0, **batch: int) -> Tried:
    params = LOW | {MEMORY: util} | batch
    return Tried(
        params, Outcome.OK.value, 100.0, peak_kv_pct=kv, peak_running=running,
        preemptions=preempted,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("more", "used"),
    [
        (_served(0.94, running=228, preempted=44), True),  # more running, preempted as often
        (_served(0.94, running=140, preempted=60), False),  # more running, preempted more often
        (_served(0.94, running=122, preempted=0, kv=90.0), True),  # fewer preemptions
        (_served(0.94, running=122, preempted=33), False),  # the same counters
        (_served(0.94, running=228, preempted=0, max_num_seqs=128), False),  # other batches
        (_served(0.86, running=228, preempted=0), False),  # less memory
    ],
)
def test_more_memory_is_put_to_use_where_the_cache_bound_and_the_counters_moved(
    more: Tried, used: bool
) -> None:
    bound = _served(0.90, running=122, preempted=33)
    assert put_to_use(more, bound, memory=MEMORY) is used
    idle = _served(0.90, running=122, preempted=0, kv=40.0)  # the cache never bound
    assert not put_to_use(more, idle, memory=MEMORY)


def test_the_guide_credits_more_memory_put_to_use_and_measures_nothing_again(
    tmp_path: Path,
) -> None:
    """0.9 preempted 7 times and measured 100; 0.95 preempted none and measured 80: the guide
    values 0.95 at 100 too (without the counters' rule: 80), and no re-measure is spent."""
    two = _study(tmp_path / "two", Counted(preempted=7), budget=2)
    assert [t.value for t in tried(two, memory=MEMORY)] == [100.0, 100.0]
    assert [t.value for t in tried(two)] == [100.0, 80.0]
    study = _study(tmp_path / "used", Counted(preempted=7))
    sources = [TrialRecord.of(t).source for t in study.get_trials()]
    assert not any(s.startswith("re-measure") for s in sources)
    assert recheck.contradiction(study, space=SPACE) is None


def test_the_choice_puts_more_memory_put_to_use_in_the_others_place() -> None:
    """0.90 ran 100 and 96 with preemptions; 0.95 ran 80 once without: 0.95 ranks first. Where
    0.95 preempted as often, the measurements decide (0.90 first)."""
    low, high = {MEMORY: 0.90, "max_num_seqs": 64}, {MEMORY: 0.95, "max_num_seqs": 64}
    other = {MEMORY: 0.85, "max_num_seqs": 128}

    def ranked(preempted_high: int) -> list[dict[str, object]]:
        runs = [
            Counters(0, low, 100.0, reserved=21.6, preempted=5),
            Counters(1, high, 80.0, reserved=22.8, preempted=preempted_high),
            Counters(2, other, 90.0, reserved=20.4),
            Counters(3, low, 96.0, reserved=21.6, preempted=5),
        ]  # fmt: skip
        cands = candidates(runs, goal=Goal(), statistic="median")
        order = rank(cands, goal=Goal(), noise=0.05, repeats=1, most_images=False)
        return [c.args for c in best.upgraded(order)]

    assert ranked(0) == [high, other]
    assert ranked(5) == [low, other, high]
