"""Trial logs: one fresh owner-only file per launch attempt, the engine's output copied into it
with every secret masked, and classification from that attempt's text alone."""

from __future__ import annotations

import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.engine import launcher
from autotune.engine.enginelog import EngineLog, create, unused
from autotune.engine.launcher import Ready
from autotune.engine.outcome import Classified, Outcome
from tests.conftest import FAKE_CMD

pytestmark = pytest.mark.timeout(60)
ARGS = {"gpu_memory_utilization": 0.9, "max_num_seqs": 16, "max_model_len": 4096}
TOO_LONG = {**ARGS, "max_model_len": 131072, "gpu_memory_utilization": 0.75}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_FAKE_STARTUP_S", "0.2")
    monkeypatch.setenv("AUTOTUNE_FAKE_GPU_MEMORY_GIB", "24")


def _owner_only(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_rerun_with_the_same_trial_number_is_classified_from_its_own_log(
    tmp_path: Path, model_dir: Path, fast: None
) -> None:
    """Same state dir, a new study: trial 0 again. The earlier run's error must not decide."""
    log = tmp_path / "logs" / "trial-0000.log"
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS, log_path=log,
        extra=["--no-such-flag"], startup_timeout_s=30,
    ) as (first, ready):  # fmt: skip
        assert isinstance(ready, Classified) and ready.outcome is Outcome.INVALID_CONFIG
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=TOO_LONG, log_path=log,
        startup_timeout_s=30,
    ) as (second, ready):  # fmt: skip
        assert isinstance(ready, Classified)
        assert ready.outcome is Outcome.KV_TOO_SMALL, ready
    assert first.log_path == log and second.log_path != log
    assert second.log_path.parent == log.parent
    assert "--no-such-flag" in log.read_text()
    assert "--no-such-flag" not in second.log_path.read_text()
    assert _owner_only(log) and _owner_only(second.log_path)


def test_api_key_and_token_never_reach_the_log(tmp_path: Path, model_dir: Path, fast: None) -> None:
    """vLLM prints its non-default args (the key among them); argparse echoes what it refuses."""
    key, token = "sk-live-7f3a9c", "hf_abcdefXYZ"
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS,
        log_path=tmp_path / "ok.log", extra=["--api-key", key], startup_timeout_s=30,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready
        assert engine.api_key == key
    text = (tmp_path / "ok.log").read_text()
    assert "non-default args" in text and "'api_key': '***'" in text
    assert key not in text
    with launcher.launch(
        command=shlex.split(FAKE_CMD), model=str(model_dir), args=ARGS,
        log_path=tmp_path / "bad.log", extra=[f"--hf-token={token}"], startup_timeout_s=30,
    ) as (engine, ready):  # fmt: skip
        assert isinstance(ready, Classified) and ready.outcome is Outcome.INVALID_CONFIG
        assert "unrecognized arguments" in ready.reason and token not in ready.reason
    assert token not in (tmp_path / "bad.log").read_text()


def test_create_never_opens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "trial-0003.log"
    assert unused(path) == path
    path.write_text("an earlier run\n")
    assert unused(path) == tmp_path / "trial-0003-2.log"
    made = []
    for _ in range(3):
        found, f = create(path)
        f.close()
        made.append(found)
    assert made == [tmp_path / f"trial-0003-{n}.log" for n in (2, 3, 4)]
    assert path.read_text() == "an earlier run\n"
    assert all(_owner_only(p) for p in made)


def test_output_is_copied_whole_and_masked(tmp_path: Path) -> None:
    """Lines split across writes, a last line without a newline, a secret in both."""
    secret = "S3CRET-value"
    log = EngineLog(tmp_path / "e.log", secrets=[secret])
    log.write(f"$ engine --api-key {secret}\n")
    script = (
        "import sys, time\n"
        f"sys.stdout.write('half {secret[:4]}'); sys.stdout.flush(); time.sleep(0.05)\n"
        f"sys.stdout.write('{secret[4:]} done\\n'); sys.stdout.flush()\n"
        f"sys.stderr.write('\\x1b[31m[/v1/completions] {secret}')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=log.sink, stderr=log.sink)
    log.spawned()
    assert proc.wait(timeout=30) == 0
    log.sync()
    text = log.path.read_text()
    log.close()
    assert secret not in text and secret not in log.path.read_text()
    assert text.count("***") == 3 and "half *** done\n" in text
    assert text.endswith("[/v1/completions] ***")
