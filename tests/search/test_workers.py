"""Workers of one study: per-worker seeds, the shared budget, the hardware fingerprint, and
``profiles save --from-study``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.search.workers import coordination as workers
from autotune.search.workers.storage import rdb_storage
from tests.conftest import FAKE_CMD, run_autotune

ARGS = [
    "--gpu", "L4:24", "--repeats", "1", "--no-soak", "--no-prune", "--max-num-seqs", "8:128",
    "--min-model-len", "2048", "--input-len", "128", "--output-len", "16", "--num-prompts", "16",
    "--quiet", "--vllm-cmd", FAKE_CMD,
]  # fmt: skip
FAST = {"AUTOTUNE_FAKE_STARTUP_S": "0.2", "AUTOTUNE_FAKE_TIME_SCALE": "0.05"}


def autotune(*args: str) -> subprocess.CompletedProcess[str]:
    return run_autotune(*args, env=FAST, timeout=120)


def test_worker_seeds_differ_only_when_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.ENV_WORKER_INDEX, raising=False)
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert workers.worker_seed(7, shared=False) == 7  # a lone worker is reproducible
    assert workers.worker_seed(None, shared=True) is None
    seeds = set()
    for index in range(4):
        monkeypatch.setenv(workers.ENV_WORKER_INDEX, str(index))
        seeds.add(workers.worker_seed(7, shared=True))
        assert workers.worker_seed(7, shared=True) == workers.worker_seed(7, shared=False)
    assert len(seeds) == 4


def heartbeat_study(tmp_path: Path) -> optuna.Study:
    storage = rdb_storage(f"sqlite:///{tmp_path / 's.db'}")
    return optuna.create_study(storage=storage, study_name="s")


def test_a_launch_beyond_the_shared_budget_is_given_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(workers.ENV_HEARTBEAT, "1")  # a short pause after giving back
    study = heartbeat_study(tmp_path)
    dist: dict[str, BaseDistribution] = {"x": IntDistribution(0, 10)}
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1}, distributions=dist, value=1.0,
            user_attrs={"launched": True, "outcome": "ok", "worker": "a:1"},
        )
    )  # fmt: skip
    other = workers.ask(study)  # another worker holds the last launch
    other.suggest_int("x", 0, 10)
    other.set_user_attr("launched", True)
    other.set_user_attr("worker", "b:2")
    assert workers.counts(study) == workers.Counts(done=1, running=1, mine=0, searched=2)
    study.enqueue_trial({"x": 7}, user_attrs={"source": "vllm-defaults"})
    mine = workers.ask(study)
    assert mine.suggest_int("x", 0, 10) == 7
    mine.set_user_attr("launched", True)
    workers.mark(mine)
    assert workers.over_budget(study, mine, budget=2)
    workers.give_back(study, mine, {"x": 7})
    assert study.trials[mine.number].state == TrialState.FAIL
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.user_attrs["source"] == "vllm-defaults"  # the defaults are not lost
    assert workers.counts(study).done == 1  # a given-back trial is no launch
    assert workers.finisher(study) is not None  # b:2 still runs: it finishes the study


def test_fingerprint_mismatch_refuses_to_join(tmp_path: Path) -> None:
    study = heartbeat_study(tmp_path)
    node = {"gpu": "H100", "memory_gib": 79.2, "count": 1, "driver": "550.54", "device": "gpu"}
    workers.check_fingerprint(study, node)
    workers.check_fingerprint(study, dict(node))
    with pytest.raises(UserError, match=r"driver '535.1' \(study: '550.54'\)"):
        workers.check_fingerprint(study, node | {"driver": "535.1"})


@pytest.mark.slow
def test_refusal_from_the_command_line_and_save_from_study(model_dir: Path) -> None:
    first = autotune("tune", str(model_dir), "--trials", "2", *ARGS)
    assert first.returncode == 0, first.stderr
    state = Path(os.environ["AUTOTUNE_STATE_DIR"])
    storage = f"sqlite:///{state / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    print_ = study.user_attrs["fingerprint"]
    study.set_user_attr("fingerprint", print_ | {"driver": "550.54"})  # another node's driver
    again = autotune("tune", str(model_dir), "--trials", "3", *ARGS)
    assert again.returncode == 2
    assert "hardware differs from study" in again.stderr and "Traceback" not in again.stderr

    (saved,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    tuned = yaml.safe_load(saved.read_text())
    saved.unlink()
    done = autotune("profiles", "save", str(model_dir), "--from-study")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == saved
    again_saved = yaml.safe_load(saved.read_text())
    for key in ("model", "hardware", "vllm_args", "metrics", "workload", "objective"):
        assert again_saved[key] == tuned[key], key
    assert again_saved["provenance"]["trial"] == tuned["provenance"]["trial"]
    missing = autotune("profiles", "save", "--from-study", "--study", "nope")
    assert missing.returncode == 2 and "no study nope" in missing.stderr


def test_a_stale_trial_is_retried_once_and_a_given_back_retry_stays_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(workers.ENV_HEARTBEAT, "1")  # a short pause after giving back
    study = heartbeat_study(tmp_path)
    dist: dict[str, BaseDistribution] = {"x": IntDistribution(0, 10)}
    dead = workers.ask(study)
    dead.suggest_int("x", 0, 10)
    dead.set_user_attr("launched", True)
    frozen = study.trials[dead.number]
    workers.retry_stale(study, frozen)
    workers.retry_stale(study, frozen)  # two workers fail it at the same moment
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued.system_attrs["retry_history"] == [dead.number]
    study.tell(dead, state=TrialState.FAIL)
    retry = workers.ask(study)
    assert retry.number == queued.number and workers.is_retry(study, retry)
    assert retry.suggest_int("x", 0, 10) == frozen.params["x"]
    retry.set_user_attr("launched", True)
    workers.give_back(study, retry, {"x": frozen.params["x"]})  # over budget: not launched
    (again,) = study.get_trials(states=(TrialState.WAITING,))
    assert again.params == frozen.params and again.distributions == dist
    assert again.system_attrs["retry_history"] == [dead.number]  # still capped by its history
