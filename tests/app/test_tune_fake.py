"""Integration: the whole tune → profile → serve loop against the fake engine as a real process."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
import yaml

from autotune.testing._fake_boot import plan_boot
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig
from tests.conftest import FAKE_CMD, run_autotune

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAKE_ENV = {
    "AUTOTUNE_FAKE_STARTUP_S": "0.2",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
    "AUTOTUNE_FAKE_ACT_FACTOR": "96",  # a profiling-OOM region at large max_num_batched_tokens
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
}
ARGS = [
    "--gpu", "L4:24",
    "--gpu-memory-utilization", "0.80:0.99",  # the CUDA-graph capture cliff sits near the top
    "--max-num-seqs", "8:256",
    "--min-model-len", "2048",
    "--input-len", "128", "--output-len", "16", "--num-prompts", "48",
    "--seed", "7", "--quiet",
]  # fmt: skip

# Where the fake's own memory model fails → the class autotune must report (independent oracle).
PHASE_CLASS = {
    "init_device": "insufficient_free_memory",
    "load_model": "oom_weights",
    "profile_run": "oom_profiling",
    "profile_cudagraph_memory": "oom_cuda_graphs",
    "capture_model": "oom_cuda_graphs",
    "initialize_kv_cache": "oom_startup",
}


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, **FAKE_ENV}


def expected_outcome(args: dict[str, Any], model: Path) -> str:
    info = ModelInfo.from_config(json.loads((model / "config.json").read_text()))
    cfg = ServeConfig(
        util=args["gpu_memory_utilization"],
        max_num_seqs=args["max_num_seqs"],
        max_num_batched_tokens=args["max_num_batched_tokens"],
        max_model_len=args["max_model_len"],
    )
    boot = plan_boot(cfg, info, FakeEnv.from_environ(FAKE_ENV))
    failed = next((p for p in boot.phases if p.error), None)
    if failed is None:
        return "ok"
    if failed.where == "_initialize_kv_caches":
        return "no_kv_cache" if "No available memory" in (failed.error or "") else "kv_too_small"
    return PHASE_CLASS[failed.where]


def load(state: Path) -> optuna.Study:
    storage = f"sqlite:///{state / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_twelve_trial_study_then_serve(model_dir: Path, env: dict[str, str]) -> None:
    done = run_autotune(  # every candidate launched: the failure regions must be hit and classified
        "tune", str(model_dir), "--vllm-cmd", FAKE_CMD, "--trials", "12", "--no-prescreen",
        "--no-guide", "--repeats", "1", *ARGS, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    study = load(Path(env["AUTOTUNE_STATE_DIR"]))
    trials = study.get_trials()
    assert len(trials) == 12
    assert trials[0].user_attrs["source"] == "vllm-defaults"
    assert trials[0].user_attrs["vllm_args"]["max_num_seqs"] == 256  # vLLM's default on an L4
    outcomes = [t.user_attrs["outcome"] for t in trials]
    for t in trials:  # every trial classified as the engine's own memory model says
        assert t.user_attrs["outcome"] == expected_outcome(t.user_attrs["vllm_args"], model_dir), t
        assert Path(t.user_attrs["log"]).is_file()
        if t.user_attrs["outcome"] != "ok":  # infeasible: COMPLETE + violated constraint
            assert t.state == optuna.trial.TrialState.COMPLETE and t.constraints["infeasible"] > 0
    assert any(o.startswith("oom_") for o in outcomes), outcomes
    assert "kv_too_small" in outcomes, outcomes
    kv = next(t for t in trials if t.user_attrs["outcome"] == "kv_too_small")
    assert (
        0 < kv.user_attrs["estimated_max_model_len"] < kv.user_attrs["vllm_args"]["max_model_len"]
    )

    ok = [t for t in trials if t.user_attrs["outcome"] == "ok"]
    assert ok and all(t.value and t.value > 0 for t in ok)
    assert all(t.user_attrs["startup"]["kv_cache_tokens"] > 0 for t in ok)
    # --no-prescreen still learns: each launch's KV cache was predicted before it started
    assert all(t.user_attrs["predicted_kv_cache_tokens"] is not None for t in trials)
    for t in ok[1:]:  # calibrated by then (failures calibrate too)
        actual = t.user_attrs["startup"]["kv_cache_tokens"]
        assert abs(t.user_attrs["predicted_kv_cache_tokens"] / actual - 1) <= 0.05, t.user_attrs
    top = max(t.value or 0 for t in ok)
    near = [t for t in ok if (t.value or 0) >= 0.95 * top]
    best = max(near, key=lambda t: (t.user_attrs["vllm_args"]["max_model_len"], t.value or 0))

    (profile_path,) = Path(env["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(profile_path.read_text())
    assert profile["schema_version"] == 2 and profile["vllm_version"] == "0.33.0+fake"
    assert profile["provenance"]["trial"] == best.number
    assert profile["vllm_args"] == best.user_attrs["vllm_args"]
    assert profile["metrics"]["output_throughput"] == pytest.approx(best.value)

    dry = run_autotune(
        "serve", str(model_dir), "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD, "--dry-run", env=env
    )
    assert dry.returncode == 0, dry.stderr
    argv = shlex.split(dry.stdout.strip())
    assert argv[: len(shlex.split(FAKE_CMD)) + 1] == [*shlex.split(FAKE_CMD), str(model_dir)]
    flags = dict(zip(argv[-8::2], argv[-7::2], strict=True))
    assert flags == {"--" + k.replace("_", "-"): str(v) for k, v in profile["vllm_args"].items()}
    assert str(profile_path) in dry.stderr

    listing = run_autotune("trials", str(model_dir), "--json", env=env)
    rows = next(iter(json.loads(listing.stdout).values()))
    assert [r["outcome"] for r in rows] == outcomes


def test_any_executable_that_behaves_like_vllm(
    tmp_path: Path, model_dir: Path, env: dict[str, str]
) -> None:
    engine = tmp_path / "bin" / "my-engine"
    engine.parent.mkdir()
    engine.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m autotune.testing.fake_engine "$@"\n'
    )
    engine.chmod(engine.stat().st_mode | stat.S_IEXEC)
    env = {**env, "AUTOTUNE_VLLM_CMD": f"{engine} serve"}  # the env var instead of --vllm-cmd
    done = run_autotune(
        "tune", str(model_dir), "--trials", "2", "--max-model-len", "8192", *ARGS, env=env
    )
    assert done.returncode == 0, done.stderr
    served = run_autotune("serve", str(model_dir), "--gpu", "L4:24", "--dry-run", env=env)
    assert served.returncode == 0 and served.stdout.startswith(f"{engine} serve {model_dir} ")


def engines_of(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and "autotune.testing.fake_engine" in cmd:
            found.append(p)
    return found


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_no_engine_and_resumes(
    model_dir: Path, env: dict[str, str], sig: int
) -> None:
    slow = {**env, "AUTOTUNE_FAKE_STARTUP_S": "3"}
    cmd = [sys.executable, "-m", "autotune", "tune", str(model_dir), "--vllm-cmd", FAKE_CMD,
           "--trials", "3", "--max-model-len", "8192", *ARGS]  # fmt: skip
    # A shell's background job starts with SIGINT ignored, and Python keeps it so: give the
    # child the default disposition, as a terminal's Ctrl-C would find it.
    proc = subprocess.Popen(
        cmd, env=slow, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    deadline = time.monotonic() + 60
    while len(engines_of(str(model_dir))) < 2:  # the fake and its EngineCore-like child
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err and "Traceback" not in err
    assert engines_of(str(model_dir)) == []

    study = load(Path(env["AUTOTUNE_STATE_DIR"]))
    first, retry = study.get_trials()
    assert first.user_attrs["outcome"] == "interrupted"
    assert retry.state == optuna.trial.TrialState.WAITING
    done = run_autotune(*cmd[3:], env=env)
    assert done.returncode == 0, done.stderr
    trials = load(Path(env["AUTOTUNE_STATE_DIR"])).get_trials()
    finished = [t for t in trials if t.user_attrs.get("outcome") != "interrupted"]
    launched = [t for t in trials if t.user_attrs.get("launched")]
    assert len(launched) == 3  # the budget, the interrupted launch included (--trials 3),
    assert len(finished) == 2  # with the interrupted candidate re-run first
    assert finished[0].params == first.params
    again = run_autotune(*cmd[3:], env=env)  # nothing left to do: no trial repeated
    assert again.returncode == 0 and len(load(Path(env["AUTOTUNE_STATE_DIR"])).get_trials()) == len(
        trials
    )
