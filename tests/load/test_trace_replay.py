"""Trace replay against the fake engine (a test double for ``vllm serve``) as a real process: the
client sends exactly the trace's requests at its timestamps, and ``tune --trace`` benchmarks
every trial with exactly the trace's rows."""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autotune.load.arrivals import Arrivals
from autotune.load.client import run
from autotune.load.request import Request
from autotune.load.saturation import saturated
from tests.app.test_goals_fake import FAKE_ENV, SMALL
from tests.conftest import FAKE_CMD, run_autotune, write_model
from tests.testing.test_fake_engine import LLAMA_8B, Fake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Why 5% or 20 ms, whichever is larger, per gap: the client sleeps until each request's own
# offset from one origin (no error accumulates from gap to gap), so a send is late only by the
# event loop's wake-up: a few ms idle, ~20 ms seen on 2 shared cores under load, and one late
# send skews the two gaps around it. So 90% of the gaps are held to that and every gap to
# 100 ms (a lost or queued send would be off by a whole gap, 50-300 ms at 4x); the span and
# the mean gap (over ~7 s, where a late send weighs little) are held to 5%.
GAP_FLOOR_S = 0.020
GAP_CAP_S = 0.100
SHARE = 0.05


def _trace(n: int, *, seed: int) -> list[float]:
    """Timestamps of a made-up trace: an arbitrary origin, uneven gaps of 0.2-1.2 s."""
    rng = random.Random(seed)
    stamps = [1_700_000_000.0]
    for _ in range(n - 1):
        stamps.append(stamps[-1] + rng.uniform(0.2, 1.2))
    return stamps


def test_replay_sends_the_trace_count_at_its_gaps(tmp_path: Path) -> None:
    model = write_model(tmp_path / "llama", LLAMA_8B)
    fake = Fake(tmp_path, str(model), "--max-model-len", "4096")
    try:
        fake.wait_ready(timeout=30)
        stamps = _trace(40, seed=4)  # ~28 s of trace, replayed at 4x: ~7 s
        requests = [
            Request(f"request {i} of the trace", None, max_tokens=4, ignore_eos=True, timestamp=t)
            for i, t in enumerate(stamps)
        ]
        speed = 4.0
        result = run(
            base_url=fake.url,
            model=str(model),
            requests=requests,
            arrivals=Arrivals(trace_speed=speed),
            timeout_s=120,
        )
    finally:
        fake.stop()
    assert result.aborted is None and result.errors == ()
    assert result.metrics.completed == len(stamps) == len(result.records)
    sent = [r.start - result.started for r in result.records]
    assert sorted(sent) == sent  # sent in the trace's order
    expected = [(t - stamps[0]) / speed for t in stamps]
    assert list(result.offsets) == pytest.approx(expected)
    measured_gaps = [b - a for a, b in itertools.pairwise(sent)]
    trace_gaps = [b - a for a, b in itertools.pairwise(expected)]
    span = sent[-1] - sent[0]
    assert span == pytest.approx(expected[-1], rel=SHARE)
    assert statistics.fmean(measured_gaps) == pytest.approx(statistics.fmean(trace_gaps), rel=SHARE)
    pairs = list(zip(measured_gaps, trace_gaps, strict=True))
    close = [abs(got - want) <= max(SHARE * want, GAP_FLOOR_S) for got, want in pairs]
    assert sum(close) >= 0.9 * len(pairs), pairs
    assert all(abs(got - want) <= GAP_CAP_S for got, want in pairs), pairs
    assert saturated(result) is False  # 4-token answers at ~6 requests/s: the fake keeps up


def test_tune_with_a_trace_sends_its_rows_in_every_benchmark(tmp_path: Path) -> None:
    model = write_model(tmp_path / "small", SMALL)
    trace = tmp_path / "trace.jsonl"
    stamps = _trace(24, seed=9)
    trace.write_text(
        "".join(
            json.dumps({"prompt": f"question {i} " * 8, "output_len": 8, "timestamp": t}) + "\n"
            for i, t in enumerate(stamps)
        )
    )
    done = run_autotune(
        "tune", str(model), "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--trace", str(trace),
        "--trace-speed", "8", "--trials", "3", "--repeats", "1", "--no-soak", "--quiet",
        "--max-model-len", "4096",
        env=FAKE_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    storage = f"sqlite:///{Path(os.environ['AUTOTUNE_STATE_DIR']) / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    benchmarked: list[dict[str, Any]] = [
        t.user_attrs["metrics"] for t in study.trials if t.user_attrs.get("metrics")
    ]
    assert benchmarked, [t.user_attrs.get("outcome") for t in study.trials]
    for metrics in benchmarked:
        assert metrics["completed"] + metrics["failed"] == len(stamps), metrics
    (path,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert profile["workload"]["num_prompts"] == len(stamps)
    assert profile["workload"]["dataset"] == str(trace)
    assert profile["metrics"]["completed"] == len(stamps)
