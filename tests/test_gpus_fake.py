"""``autotune tune --gpus`` on simulated GPUs (``autotune.testing.fake_gpus``): one engine per
GPU at once, pinned with CUDA_VISIBLE_DEVICES, on distinct ports; GPU memory checked free
before a launch and released after one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.parallel import groups, parse_gpus, worker_options
from autotune.prepare import TuneOptions
from autotune.testing import fake_gpus
from tests.conftest import FAKE_CMD

pytestmark = pytest.mark.timeout(180)

ARGS = [
    "--gpu", "L4:24", "--repeats", "1", "--no-soak",
    "--gpu-memory-utilization", "0.80:0.95", "--max-num-seqs", "8:128",
    "--min-model-len", "2048", "--input-len", "128", "--output-len", "16", "--num-prompts", "32",
    "--quiet", "--vllm-cmd", FAKE_CMD,
]  # fmt: skip


def tune(model: Path, gpus: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "AUTOTUNE_FAKE_GPU_DIR": str(gpus),
        "AUTOTUNE_FAKE_STARTUP_S": "1.5",
        "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
        "AUTOTUNE_HEARTBEAT_S": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "autotune", "tune", str(model), *ARGS, *args],
        env=environ, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip


def study_of(state: Path) -> optuna.Study:
    storage = f"sqlite:///{state / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def port_of(log: str) -> int:
    first = Path(log).read_text().splitlines()[0]
    m = re.search(r"--port (\d+)", first)
    assert m is not None, first
    return int(m[1])


def test_parse_and_group_gpus() -> None:
    assert parse_gpus("0,1,2,3", available=8) == [0, 1, 2, 3]
    assert parse_gpus("all", available=4) == [0, 1, 2, 3]
    assert parse_gpus("2-5", available=None) == [2, 3, 4, 5]
    for bad in ("0,0", "x", "9"):
        with pytest.raises(UserError):
            parse_gpus(bad, available=8)
    with pytest.raises(UserError, match="no GPU found"):
        parse_gpus("all", available=None)
    assert groups([0, 1, 2, 3], size=2) == [(0, 1), (2, 3)]
    assert groups([0, 1, 2], size=2) == [(0, 1)]
    with pytest.raises(UserError):
        groups([0], size=2)
    opts = worker_options(
        TuneOptions(model="m", gpu="L4:24x4", gpus="all"), group=(2, 3), storage="sqlite:///x"
    )
    assert (opts.gpu, opts.gpus, opts.storage) == ("L4:24x2", None, "sqlite:///x")


def test_four_simulated_gpus_run_four_engines_at_once(model_dir: Path, tmp_path: Path) -> None:
    gpus = fake_gpus.create(tmp_path / "gpus", 4)
    done = tune(model_dir, gpus, "--gpus", "all", "--trials", "8")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("profile saved to") == 1, done.stderr
    study = study_of(Path(os.environ["AUTOTUNE_STATE_DIR"]))
    trials = [
        t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("launched")
    ]
    assert len(trials) == 8
    assert {t.user_attrs["gpus"] for t in trials} == {"0", "1", "2", "3"}
    assert len({t.user_attrs["worker"] for t in trials}) == 4
    # At the moment the last of the first launches started, all of them were still running:
    first = sorted(trials, key=lambda t: t.datetime_start or 0)[:4]
    latest_start = max(t.datetime_start for t in first if t.datetime_start)
    at_once = [t for t in first if t.datetime_complete and t.datetime_complete > latest_start]
    assert len(at_once) == 4, [(t.datetime_start, t.datetime_complete) for t in first]
    assert len({t.user_attrs["gpus"] for t in at_once}) == 4
    assert len({port_of(t.user_attrs["log"]) for t in at_once}) == 4
    # Pinned to their own simulated GPU: no engine saw another's memory.
    assert not [t for t in trials if t.user_attrs["outcome"] == "insufficient_free_memory"]
    assert fake_gpus.used_bytes(gpus, None) == 0  # every engine gave its memory back


def test_memory_never_released_fails_the_trial(model_dir: Path, tmp_path: Path) -> None:
    gpus = fake_gpus.create(tmp_path / "gpus", 1)
    done = tune(
        model_dir, gpus, "--gpus", "0", "--trials", "3",
        AUTOTUNE_FAKE_GPU_LEAK="1", AUTOTUNE_GPU_RELEASE_TIMEOUT_S="1",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "memory of an earlier engine was never released" in done.stderr
    assert "Traceback" not in done.stderr
    study = study_of(Path(os.environ["AUTOTUNE_STATE_DIR"]))
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["outcome"] == "harness_error"
    assert "not released" in first.user_attrs["reason"]
