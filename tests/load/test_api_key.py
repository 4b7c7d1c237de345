"""`-- --api-key K`: the engine demands the key of every request, so the benchmark sends it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from autotune.engine.outcome import Outcome
from autotune.load import client as loadgen
from autotune.load.request import Request
from autotune.trial.runner import TrialRunner
from tests.conftest import FAKE_CMD

pytestmark = pytest.mark.timeout(90)
ARGS = {"gpu_memory_utilization": 0.9, "max_num_seqs": 16, "max_model_len": 4096}
REQUESTS = [Request(prompt=[11, 12, 13, 14], messages=None, max_tokens=4, ignore_eos=True)] * 6


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_FAKE_STARTUP_S", "0.2")
    monkeypatch.setenv("AUTOTUNE_FAKE_GPU_MEMORY_GIB", "24")


def test_a_trial_with_an_api_key_is_measured(tmp_path: Path, model_dir: Path, fast: None) -> None:
    key = "sk-bench-5d41402a"
    runner = TrialRunner(
        command=shlex.split(FAKE_CMD),
        model=str(model_dir),
        requests=REQUESTS,
        extra_args=["--enforce-eager", "--api-key", key],
        startup_timeout_s=30,
        bench_timeout_s=60,
    )
    result = runner.run(args=ARGS, log_path=tmp_path / "t.log", on_phase=lambda _: None)
    assert result.outcome is Outcome.OK, result.reason
    assert result.metrics is not None and result.metrics.completed == len(REQUESTS)
    assert result.log_path == tmp_path / "t.log" and key not in result.log_path.read_text()


def test_the_key_is_sent_only_when_given(tmp_path: Path, model_dir: Path, fast: None) -> None:
    """The same engine: every request refused without the key, every one answered with it."""
    from autotune.engine import launcher

    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS, log_path=tmp_path / "l",
        extra=["--api-key", "k-123456"], startup_timeout_s=30,
    ) as (_, ready):  # fmt: skip
        assert isinstance(ready, launcher.Ready), ready

        def bench(key: str | None) -> loadgen.BenchResult:
            return loadgen.run(
                base_url=ready.base_url, model=ready.served_model, requests=REQUESTS,
                timeout_s=30, api_key=key,
            )  # fmt: skip

        refused = bench(None)
        assert refused.statuses == {401: len(REQUESTS)} and refused.metrics.completed == 0
        answered = bench("k-123456")
        assert answered.statuses == {} and answered.metrics.completed == len(REQUESTS)
