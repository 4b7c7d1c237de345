"""Arrival processes (Poisson, gamma bursts, ramp-up, trace replay), their validation, the options
that make them, and the backlog measures of ``load.saturation`` on hand-made runs."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import pytest

from autotune.app.options import TuneOptions
from autotune.errors import UserError
from autotune.load.arrivals import Arrivals, arrivals
from autotune.load.backlog import LoadState, due_by
from autotune.load.client import BenchResult
from autotune.load.metrics import RequestRecord, aggregate
from autotune.load.request import Request
from autotune.load.saturation import (
    BacklogWatch,
    backlog_at,
    lags,
    offered_rate,
    saturated,
    saturation,
)
from autotune.load.workload import Workload
from autotune.profiles.build import Chosen, build_profile
from autotune.profiles.store import Profile
from tests.conftest import write_model
from tests.fuzz.test_fuzz_cli import run as run_cli


def _requests(n: int, stamps: list[float | None] | None = None) -> list[Request]:
    return [
        Request("x", None, max_tokens=4, ignore_eos=True, timestamp=stamps[i] if stamps else None)
        for i in range(n)
    ]


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


# --- rate, bursts, ramp-up ------------------------------------------------------------------


@pytest.mark.parametrize("burstiness", [0.25, 0.5, 1.0, 4.0])
def test_gamma_gaps_have_mean_one_over_rate_and_cv_one_over_sqrt_shape(burstiness: float) -> None:
    rate = 8.0
    offsets = Arrivals(rate=rate, burstiness=burstiness).offsets(_requests(20_000), seed=5)
    gaps = _gaps(offsets)
    mean = statistics.fmean(gaps)
    cv = statistics.stdev(gaps) / mean
    # 20 000 draws: the sample mean's relative error is ~CV/141, at most ~1.4% here
    assert mean == pytest.approx(1 / rate, rel=0.06)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.1)
    assert offsets[0] == 0.0 and all(g >= 0 for g in gaps)


def test_burstier_means_more_spread_at_the_same_rate() -> None:
    cvs = []
    for b in (0.2, 1.0, 5.0):
        gaps = _gaps(Arrivals(rate=4, burstiness=b).offsets(_requests(5000), seed=1))
        cvs.append(statistics.stdev(gaps) / statistics.fmean(gaps))
    assert cvs[0] > cvs[1] > cvs[2]


def test_poisson_is_the_seeded_exponential_process_of_before() -> None:
    reqs = _requests(300)
    assert Arrivals(rate=10).offsets(reqs, seed=3) == arrivals(300, rate=10.0, seed=3)


def test_same_seed_same_offsets_other_seed_other_offsets() -> None:
    for shape in (
        Arrivals(rate=3),
        Arrivals(rate=3, burstiness=0.5),
        Arrivals(rate=3, burstiness=2, ramp_up_s=10),
    ):
        reqs = _requests(100)
        first = shape.offsets(reqs, seed=11)
        assert first == shape.offsets(reqs, seed=11)
        assert first != shape.offsets(reqs, seed=12)
        assert len(first) == 100 and first == sorted(first)


def test_all_at_once_has_no_offsets() -> None:
    assert Arrivals().offsets(_requests(5), seed=0) == []
    assert Arrivals().all_at_once and not Arrivals(rate=1).all_at_once


def test_ramp_up_gaps_shrink_until_the_rate_is_reached() -> None:
    rate, ramp = 20.0, 30.0
    offsets = Arrivals(rate=rate, ramp_up_s=ramp).offsets(_requests(4000), seed=2)
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    during = [t for t in offsets if t < ramp]
    # the expected arrivals during a linear ramp from 0: rate * ramp / 2 = 300 (Poisson: ±~17)
    assert 240 <= len(during) <= 360
    thirds = [
        statistics.fmean(_gaps([t for t in offsets if lo * ramp / 3 <= t < hi * ramp / 3]))
        for lo, hi in ((0, 1), (1, 2), (2, 3))
    ]
    assert thirds[0] > thirds[1] > thirds[2] > 1 / rate
    after = _gaps([t for t in offsets if t >= ramp])
    assert statistics.fmean(after) == pytest.approx(1 / rate, rel=0.06)


def test_ramp_up_follows_the_documented_rule_in_expectation() -> None:
    # L(t) = rate t^2 / (2 T) arrivals are expected by t during the ramp: by T/2, a quarter of
    # the ramp's rate*T/2. Averaged over seeds so the bound is loose but the rule is exact.
    rate, ramp = 10.0, 40.0
    counts = [
        sum(
            1
            for t in Arrivals(rate=rate, ramp_up_s=ramp).offsets(_requests(600), seed=s)
            if t < ramp / 2
        )
        for s in range(20)
    ]
    assert statistics.fmean(counts) == pytest.approx(rate * (ramp / 2) ** 2 / (2 * ramp), rel=0.1)


# --- trace replay -----------------------------------------------------------------------------


def test_trace_offsets_are_the_timestamps_from_the_earliest_divided_by_the_speed() -> None:
    reqs = _requests(5, [100.0, 100.5, 102.0, 101.0, 100.0])
    assert Arrivals(trace_speed=1).offsets(reqs, seed=0) == [0.0, 0.5, 2.0, 1.0, 0.0]
    assert Arrivals(trace_speed=2).offsets(reqs, seed=99) == [0.0, 0.25, 1.0, 0.5, 0.0]
    assert Arrivals(trace_speed=0.5).offsets(reqs[:2], seed=0) == [0.0, 1.0]


def test_a_trace_request_without_a_timestamp_is_one_line() -> None:
    with pytest.raises(UserError, match=r"request 2 has no 'timestamp'") as err:
        Arrivals(trace_speed=1).offsets(_requests(3, [0.0, None, 1.0]), seed=0)
    assert "\n" not in str(err.value)


# --- validation, signature, round trip --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"rate": 0.0}, "--request-rate 0: give a number > 0"),
        ({"rate": -2.0}, "--request-rate -2"),
        ({"rate": math.nan}, "--request-rate nan"),
        ({"rate": 1.0, "burstiness": 0.0}, "--burstiness 0: give a gamma shape > 0"),
        ({"rate": 1.0, "burstiness": math.inf}, "--burstiness inf"),
        ({"rate": 1.0, "ramp_up_s": -1.0}, "--ramp-up -1: give seconds >= 0"),
        ({"ramp_up_s": 10.0}, "--ramp-up shapes arrivals at a rate: give --request-rate"),
        ({"burstiness": 0.5}, "--burstiness shapes arrivals at a rate"),
        ({"trace_speed": 0.0}, "--trace-speed 0: give a number > 0"),
        ({"trace_speed": 1.0, "rate": 2.0}, "drop --request-rate"),
    ],
)
def test_bad_arrivals_are_one_line(kwargs: dict[str, float], text: str) -> None:
    with pytest.raises(UserError) as err:
        Arrivals(**kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)


def test_signatures() -> None:
    assert Arrivals().signature() == ""
    assert Arrivals(rate=4).signature() == "r4"
    assert Arrivals(rate=0.5).signature() == "r0.5"
    assert Arrivals(rate=4, burstiness=0.5).signature() == "r4-b0.5"
    assert Arrivals(rate=4, ramp_up_s=30).signature() == "r4-ramp30"
    assert Arrivals(rate=4, burstiness=2, ramp_up_s=30).signature() == "r4-b2-ramp30"
    assert Arrivals(trace_speed=2).signature() == "trace-x2"
    assert Arrivals(trace_speed=1).signature() == "trace-x1"


def test_round_trip_and_at_rate() -> None:
    for a in (Arrivals(), Arrivals(rate=3, burstiness=0.5, ramp_up_s=12), Arrivals(trace_speed=4)):
        assert Arrivals.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert Arrivals.from_dict({"rate": 2}) == Arrivals(rate=2.0)
    assert Arrivals(trace_speed=3).at_rate(5) == Arrivals(rate=5)
    assert Arrivals(rate=1, burstiness=0.5).at_rate(7) == Arrivals(rate=7, burstiness=0.5)
    with pytest.raises(UserError, match="unknown key"):
        Arrivals.from_dict({"rate": 1, "speed": 2})
    with pytest.raises(UserError, match="rate must be a number"):
        Arrivals.from_dict({"rate": "fast"})
    with pytest.raises(UserError, match="burstiness must be a number"):
        Arrivals.from_dict({"rate": 1, "burstiness": True})


# --- options ----------------------------------------------------------------------------------


def _trace_file(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"p{i}", "timestamp": i * 0.5}) + "\n" for i in range(n))
    )
    return path


def test_options_build_the_arrivals(tmp_path: Path) -> None:
    assert TuneOptions(model="m").arrivals() is None
    assert TuneOptions(model="m", request_rate=4).arrivals() == Arrivals(rate=4)
    got = TuneOptions(model="m", request_rate=4, burstiness=0.5, ramp_up_s=9).arrivals()
    assert got == Arrivals(rate=4, burstiness=0.5, ramp_up_s=9)
    trace = tmp_path / "t.jsonl"
    assert TuneOptions(model="m", trace=trace, trace_speed=3).arrivals() == Arrivals(trace_speed=3)
    for kwargs, text in (
        ({"burstiness": 0.5}, "give --request-rate too"),
        ({"ramp_up_s": 5.0}, "give --request-rate too"),
        ({"trace_speed": 2.0}, "give --trace FILE too"),
        ({"trace": trace, "request_rate": 2.0}, "drop --request-rate"),
        ({"trace": trace, "burstiness": 2.0}, "drop --burstiness/--ramp-up"),
    ):
        with pytest.raises(UserError, match=text):
            TuneOptions(model="m", **kwargs).arrivals()


def test_a_trace_is_the_dataset_and_its_row_count(tmp_path: Path) -> None:
    trace = _trace_file(tmp_path / "t.jsonl", 7)
    checked = TuneOptions(model="org/m", trace=trace).check()
    assert checked.workload.dataset == trace and checked.workload.num_prompts == 7
    assert checked.check().workload == checked.workload  # checking twice changes nothing
    fewer = TuneOptions(model="org/m", trace=trace, workload=Workload(num_prompts=3)).check()
    assert fewer.workload.num_prompts == 3
    with pytest.raises(UserError, match="has 7 rows"):
        TuneOptions(model="org/m", trace=trace, workload=Workload(num_prompts=8)).check()
    other = Workload(dataset=tmp_path / "other.jsonl")
    with pytest.raises(UserError, match="drop --dataset"):
        TuneOptions(model="org/m", trace=trace, workload=other).check()


def test_cli_arrival_mistakes_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_model(tmp_path / "model")
    trace = _trace_file(tmp_path / "t.jsonl", 4)
    data = _trace_file(tmp_path / "d.jsonl", 4)
    base = ["tune", str(model), "--gpu", "L4:24", "--vllm-cmd", "no-such-vllm-here serve"]
    for args, text in (
        (["--burstiness", "0.5"], "--burstiness shapes arrivals at a rate"),
        (["--ramp-up", "30"], "--ramp-up shapes arrivals at a rate"),
        (["--burstiness", "0"], "--burstiness"),
        (["--trace-speed", "2"], "--trace-speed scales a --trace"),
        (["--trace", str(trace), "--dataset", str(data)], "drop --dataset"),
        (["--trace", str(trace), "--request-rate", "3"], "drop --request-rate"),
        (["--trace", str(trace), "--num-prompts", "5"], "has 4 rows"),
        (["--trace", str(tmp_path / "missing.jsonl")], "does not exist"),
    ):
        code, lines = run_cli([*base, *args], capsys)
        assert code == 2 and len(lines) == 1, (args, lines)
        assert lines[0].startswith("autotune: error: ") and text in lines[0], (args, lines)


# --- the backlog ------------------------------------------------------------------------------


def _run(offsets: list[float], finish: list[float], *, started: float = 100.0) -> BenchResult:
    """A hand-made paced run: request i due at offsets[i], sent then, its one token at
    finish[i]."""
    records = [
        RequestRecord(
            ok=True, prompt_tokens=1, output_tokens=1, start=started + due, ttft_s=end - due,
            itls_s=(), e2e_s=end - due, error=None, status=200,
        )
        for due, end in zip(offsets, finish, strict=True)
    ]  # fmt: skip
    return BenchResult(
        metrics=aggregate(records, duration_s=max(finish)),
        errors=(),
        aborted=None,
        statuses={},
        records=tuple(records),
        started=started,
        offsets=tuple(offsets),
    )


def test_a_server_that_keeps_up_has_no_backlog_growth() -> None:
    offsets = [i * 0.1 for i in range(200)]  # 10/s for 20 s, each answered in 0.3 s
    result = _run(offsets, [t + 0.3 for t in offsets])
    growth = saturation(result)
    assert growth is not None and abs(growth) < 0.5
    assert saturated(result) is False
    assert offered_rate(result) == pytest.approx(10.0)
    assert backlog_at(result, 10.05) == 3
    assert lags(result) == pytest.approx([0.3] * 200)


def test_a_server_at_half_the_rate_grows_its_backlog_by_the_difference() -> None:
    offsets = [i * 0.1 for i in range(200)]  # 10/s offered, one answered every 0.2 s (5/s)
    result = _run(offsets, [0.2 * (i + 1) for i in range(200)])
    growth = saturation(result)
    assert growth == pytest.approx(5.0, rel=0.1)
    assert saturated(result) is True
    waits = lags(result)
    assert waits[0] == pytest.approx(0.2) and waits[-1] is not None and waits[-1] > 15


def test_no_saturation_measure_when_sent_all_at_once() -> None:
    result = _run([0.0] * 20, [1.0] * 20)
    assert saturation(result) is None and saturated(result) is None
    empty = BenchResult(metrics=result.metrics, errors=(), aborted=None, statuses={},
                        records=result.records)  # fmt: skip
    assert saturation(empty) is None and lags(empty) == [None] * 20 and backlog_at(empty, 1) == 0


def test_due_by_counts_passed_offsets() -> None:
    assert due_by([0.0, 1.0, 2.0], 1.5, total=3) == 2
    assert due_by([], 0.0, total=7) == 7
    state = LoadState(elapsed_s=3, total=10, due=6, sent=4, finished=1)
    assert (state.backlog, state.waiting, state.in_flight) == (5, 2, 3)


def test_backlog_watch_stops_a_growing_backlog_and_not_a_level_one() -> None:
    level, growing = BacklogWatch(), BacklogWatch()  # the level one fills up in 1.2 s
    level_said = growing_said = None
    for k in range(1, 60):
        t = k * 0.2
        due = int(10 * t)
        level_said = level_said or level(
            LoadState(elapsed_s=t, total=1000, due=due, sent=due, finished=max(0, due - 12))
        )
        growing_said = growing_said or growing(
            LoadState(elapsed_s=t, total=1000, due=due, sent=due, finished=int(5 * t))
        )
    assert level_said is None
    assert growing_said is not None and growing_said.startswith("saturated: the backlog grows")


def test_the_profile_records_the_arrivals_under_its_workload() -> None:
    chosen = Chosen(number=1, vllm_args={"max_num_seqs": 8}, vllm_version="0.33.0", metrics={},
                    startup={}, log=None, study="s", num_prompts=8)  # fmt: skip
    workload = Workload().to_dict() | {"signature": "in512-out128"}
    paced = Arrivals(rate=4, burstiness=0.5)

    def build(arrivals: dict[str, float | None] | None) -> Profile:
        return build_profile(
            model={"name": "m"}, hardware={"key": "l4-24gib-x1"}, workload=workload,
            objective="throughput", extra_args=[], chosen=chosen, storage_given=False,
            state=None, arrivals=arrivals,
        )  # fmt: skip

    saved = build(paced.to_dict())
    again = Profile.from_dict(json.loads(json.dumps(saved.to_dict())), source="test")
    assert Arrivals.from_dict(again.workload["arrivals"]) == paced
    assert "arrivals" not in build(None).workload  # all at once: the profile as before
