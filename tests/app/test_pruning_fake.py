"""The pruner on the fake engine as a real process: a clearly slower configuration is stopped
mid-benchmark (PRUNED), after the pruner's warm-up steps and never during the warm-up requests."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from autotune.trial.runner import REPORT_STEPS
from tests.app.test_goals_fake import FAKE_ENV, SMALL
from tests.conftest import FAKE_CMD, run_autotune, write_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
FAST = ("128", "124", "123", "122", "121")  # five completed trials: the pruner's start-up


def test_a_clearly_slower_configuration_is_pruned_mid_benchmark(tmp_path: Path) -> None:
    model = write_model(tmp_path / "small", SMALL)
    enqueue = [arg for seqs in (*FAST[1:], "2") for arg in ("--enqueue", f"max_num_seqs={seqs}")]
    done = run_autotune(
        "tune", str(model), "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24",
        "--gpu-memory-utilization", "0.9", "--max-num-seqs", "2:128",
        "--max-num-batched-tokens", "2048", "--max-model-len", "2048",
        "--input-len", "64", "--output-len", "64", "--num-prompts", "64", "--warmup", "8",
        "--trials", "6", "--repeats", "1", "--no-soak", "--quiet", *enqueue, env=FAKE_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    storage = f"sqlite:///{Path(os.environ['AUTOTUNE_STATE_DIR']) / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    seqs = [t.user_attrs["vllm_args"]["max_num_seqs"] for t in trials]
    assert seqs == [*map(int, FAST), 2]
    *fast, slow = trials
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in fast)
    assert slow.state is optuna.trial.TrialState.PRUNED
    assert slow.user_attrs["outcome"] == "pruned"
    steps = sorted(slow.intermediate_values)
    assert steps[0] >= 1 and steps[-1] >= 2  # measured requests only, past the pruner's warm-up
    assert steps[-1] < REPORT_STEPS  # stopped before the benchmark ended
    median = sorted(t.intermediate_values[steps[-1]] for t in fast)[2]
    assert slow.intermediate_values[steps[-1]] < 0.75 * median
