"""``autotune tune --gpus`` on simulated GPUs (``autotune.testing.fake_gpus``): one engine per
GPU at once, pinned with CUDA_VISIBLE_DEVICES, on distinct ports; GPU memory checked free
before a launch and released after one."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autotune.app.gpus import groups, parse_gpus, worker_options
from autotune.app.options import TuneOptions
from autotune.errors import UserError
from autotune.testing import fake_gpus
from tests.conftest import FAKE_CMD, run_autotune

pytestmark = pytest.mark.timeout(180)

ARGS = [
    "--gpu", "L4:24", "--repeats", "1", "--no-soak", "--no-prune",
    "--gpu-memory-utilization", "0.80:0.95", "--max-num-seqs", "8:128",
    "--min-model-len", "2048", "--input-len", "128", "--output-len", "16", "--num-prompts", "32",
    "--quiet", "--vllm-cmd", FAKE_CMD,
]  # fmt: skip
FAST = {
    "AUTOTUNE_FAKE_STARTUP_S": "1.5",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
    "AUTOTUNE_HEARTBEAT_S": "1",
}


def autotune(*args: str, gpus: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_autotune(*args, env={"AUTOTUNE_FAKE_GPU_DIR": str(gpus), **FAST, **env}, timeout=170)


def tune(model: Path, gpus: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return autotune("tune", str(model), *ARGS, *args, gpus=gpus, **env)


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


@pytest.mark.slow
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

    # Engines overlapped in time, each on its own GPU and port (how many at once depends on how
    # fast the machine starts the workers: at least two, whatever the load).
    def running_at(moment: object) -> list[optuna.trial.FrozenTrial]:
        return [
            u for u in trials
            if u.datetime_start and u.datetime_complete
            and u.datetime_start <= moment < u.datetime_complete  # type: ignore[operator]
        ]  # fmt: skip

    overlapping = max((running_at(t.datetime_start) for t in trials), key=len)
    assert len(overlapping) >= 2, [(t.datetime_start, t.datetime_complete) for t in trials]
    assert len({t.user_attrs["gpus"] for t in overlapping}) == len(overlapping)
    assert len({port_of(t.user_attrs["log"]) for t in overlapping}) == len(overlapping)
    # Pinned to their own simulated GPU: no engine saw another's memory.
    assert not [t for t in trials if t.user_attrs["outcome"] == "insufficient_free_memory"]
    assert fake_gpus.used_bytes(gpus, None) == 0  # every engine gave its memory back


@pytest.mark.slow
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


def served_engine(tmp_path: Path) -> Path:
    """An engine command that is the fake for trials (and ``--version``) and, when ``serve``
    execs it with the profile, prints the command line and exits."""
    engine = tmp_path / "bin" / "engine"
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" --port "*|*" --version "*)\n'
        f'  exec {shlex.quote(sys.executable)} -m autotune.testing.fake_engine "$@";;\n'
        'esac\necho "served: $*"\n'
    )
    engine.chmod(0o755)
    return engine


@pytest.mark.slow
def test_serve_on_a_miss_tunes_per_gpu_and_finds_that_profile(
    model_dir: Path, tmp_path: Path
) -> None:
    """The profile is keyed by one engine's GPUs (x1), and serve looks it up the same way, on a
    machine of four (``--gpu L4:24x4``) as with ``--gpus``."""
    gpus = fake_gpus.create(tmp_path / "gpus", 4)
    engine = served_engine(tmp_path)
    args = [*ARGS[: ARGS.index("--vllm-cmd")], "--vllm-cmd", f"{engine} serve"]
    args[args.index("L4:24")] = "L4:24x4"
    done = autotune("serve", str(model_dir), *args, "--gpus", "all", "--trials", "4", gpus=gpus)
    assert done.returncode == 0, done.stderr
    assert "no profile for" in done.stderr and "tuning first" in done.stderr
    assert done.stdout.startswith(f"served: serve {model_dir} "), done.stdout
    (saved,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    assert yaml.safe_load(saved.read_text())["hardware"]["key"] == "l4-24gib-x1"
    for where in ([], ["--gpus", "0,1,2,3"]):
        again = autotune("serve", str(model_dir), *args, *where, "--dry-run", gpus=gpus)
        assert again.returncode == 0, again.stderr
        assert f"using profile {saved}" in again.stderr
        assert again.stdout.startswith(f"{engine} serve {model_dir} ")


@pytest.mark.slow
def test_weights_too_big_for_one_gpu_give_tensor_parallel_pairs(
    model_dir: Path, tmp_path: Path
) -> None:
    """16 GiB of weights, 12 GiB GPUs: two engines at a time, each on two GPUs with
    --tensor-parallel-size 2; serve finds the profile (x2) without being told the size."""
    gpus = fake_gpus.create(tmp_path / "gpus", 4)
    args = [*ARGS, "--gpu-memory-utilization", "0.85:0.95", "--max-num-seqs", "8:64"]
    args[args.index("L4:24")] = "L4:12"
    env = {"AUTOTUNE_FAKE_GPU_MEMORY_GIB": "12"}
    done = autotune("tune", str(model_dir), *args, "--gpus", "0,1,2,3", "--trials", "4",
                    gpus=gpus, **env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--tensor-parallel-size 2, 2 GPUs per engine" in done.stderr
    assert "2 workers on GPUs 0,1, 2,3" in done.stderr
    study = study_of(Path(os.environ["AUTOTUNE_STATE_DIR"]))
    trials = [t for t in study.trials if t.user_attrs.get("launched")]
    assert len(trials) == 4 and {t.user_attrs["gpus"] for t in trials} == {"0,1", "2,3"}
    outcomes = [(t.user_attrs["outcome"], str(t.user_attrs.get("reason"))) for t in trials]
    assert sum(o == "ok" for o, _ in outcomes) >= 2, outcomes  # vLLM's defaults may not fit
    assert not [r for _, r in outcomes if "World size" in r or "load model" in r], outcomes
    for t in trials:
        assert "--tensor-parallel-size 2" in Path(t.user_attrs["log"]).read_text().splitlines()[0]
    first = sorted(trials, key=lambda t: t.datetime_start or 0)[:2]  # two engines at once
    assert first[0].datetime_complete and first[1].datetime_start
    assert first[0].datetime_complete > first[1].datetime_start
    assert {t.user_attrs["gpus"] for t in first} == {"0,1", "2,3"}
    assert study.user_attrs["hardware"]["key"] == "l4-12gib-x2"
    assert fake_gpus.used_bytes(gpus, None) == 0
    served = autotune("serve", str(model_dir), "--gpu", "L4:12", "--vllm-cmd", FAKE_CMD,
                      "--dry-run", gpus=gpus, **env)  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert "--tensor-parallel-size 2" in served.stdout
    assert "l4-12gib-x2" in served.stderr or "2 x L4" in served.stderr


def test_the_fake_engine_needs_as_many_gpus_as_tensor_parallel_ranks(tmp_path: Path) -> None:
    gpus = fake_gpus.create(tmp_path / "gpus", 2)
    env = {"AUTOTUNE_FAKE_GPU_DIR": str(gpus), "CUDA_VISIBLE_DEVICES": "1"}
    assert "World size (2)" in (fake_gpus.too_few(env, 2) or "")
    assert fake_gpus.too_few(env | {"CUDA_VISIBLE_DEVICES": "0,1"}, 2) is None
    held = fake_gpus.hold(env | {"CUDA_VISIBLE_DEVICES": "1,0"}, 2.0, devices=2)
    assert sorted(p.parent.name for p in held) == ["0", "1"]
    assert fake_gpus.used_bytes(gpus, ["0"]) == fake_gpus.used_bytes(gpus, ["1"]) == 2 * 2**30
    fake_gpus.free(held)
    assert fake_gpus.used_bytes(gpus, None) == 0
