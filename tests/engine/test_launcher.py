"""The launcher against the fake engine as a real process: readiness, failures, tree kill."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import psutil
import pytest

from autotune.engine import launcher
from autotune.engine import process as _process
from autotune.engine.launcher import Ready
from autotune.engine.outcome import Classified, Outcome
from autotune.errors import UserError
from tests.conftest import FAKE_CMD

pytestmark = pytest.mark.timeout(60)
ARGS = {"gpu_memory_utilization": 0.9, "max_num_seqs": 16, "max_model_len": 4096}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_FAKE_STARTUP_S", "0.2")
    monkeypatch.setenv("AUTOTUNE_FAKE_GPU_MEMORY_GIB", "24")


def test_ready_then_whole_tree_killed(tmp_path: Path, model_dir: Path, fast: None) -> None:
    log = tmp_path / "trial.log"
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS, log_path=log,
        startup_timeout_s=30,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready
        assert ready.served_model == str(model_dir) and ready.max_model_len == 4096
        assert ready.version == "0.33.0+fake" and ready.base_url.startswith("http://127.0.0.1:")
        tree = [psutil.Process(engine.pid), *psutil.Process(engine.pid).children(recursive=True)]
        assert len(tree) >= 2  # the fake and its EngineCore-like child
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    text = log.read_text()
    assert text.startswith("$ ") and "--host 127.0.0.1" in text and "GPU KV cache size" in text


def test_users_listen_address_does_not_reach_a_trial(
    tmp_path: Path, model_dir: Path, fast: None
) -> None:
    """`-- --host 0.0.0.0 --port 8000` is for serving: a trial still binds its own port."""
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS, log_path=tmp_path / "t.log",
        startup_timeout_s=30, extra=["--host", "0.0.0.0", "--port=8000", "--enforce-eager"],
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready
        assert "0.0.0.0" not in engine.argv and "--port=8000" not in engine.argv
        assert "--enforce-eager" in engine.argv


def test_early_exit_is_noticed_and_classified(tmp_path: Path, model_dir: Path, fast: None) -> None:
    args = {**ARGS, "max_model_len": 131072, "gpu_memory_utilization": 0.75}
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=args,
        log_path=tmp_path / "t.log", startup_timeout_s=30,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Classified)
        assert ready.outcome is Outcome.KV_TOO_SMALL and ready.estimated_max_model_len
        assert engine.exited() == 1


def test_startup_timeout_kills_the_tree(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTUNE_FAKE_STARTUP_S", "30")
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS,
        log_path=tmp_path / "t.log", startup_timeout_s=1.5,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Classified) and ready.outcome is Outcome.STARTUP_TIMEOUT
        tree = [psutil.Process(engine.pid), *psutil.Process(engine.pid).children(recursive=True)]
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)


@pytest.mark.slow
def test_port_clash_is_retried_not_a_trial(
    tmp_path: Path, model_dir: Path, fast: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ports = [busy.getsockname()[1]]
    real = _process.free_port
    monkeypatch.setattr(_process, "free_port", lambda host: ports.pop() if ports else real(host))
    log = tmp_path / "t.log"
    with busy, launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS, log_path=log,
        startup_timeout_s=30,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Ready)
    assert "Address already in use" in log.read_text() and log.read_text().count("$ ") == 1
    assert engine.log_path == tmp_path / "t-2.log"  # the second attempt: a file of its own
    assert "Address already in use" not in engine.log_path.read_text()


def test_command_checks() -> None:
    with pytest.raises(UserError, match="not found"):
        launcher.resolve_command("definitely-not-a-command serve")
    with pytest.raises(UserError, match="empty"):
        launcher.resolve_command("  ")
    argv = launcher.build_argv(
        command=["vllm", "serve"], model="m", args={"max_num_seqs": 8, "enforce_eager": True},
        extra=["--seed", "1"],
    )  # fmt: skip
    assert argv == ["vllm", "serve", "m", "--max-num-seqs", "8", "--enforce-eager", "--seed", "1"]
