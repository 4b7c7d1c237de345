"""Integration: what vLLM's ``/metrics`` shows during a benchmark (preemptions, the peak KV-cache
usage, the most requests waiting and running), read from the fake engine as a real process,
stored in the trial and the profile, and printed by ``autotune trials``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FAKE_CMD, run_autotune

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAKE_ENV = {
    "AUTOTUNE_FAKE_STARTUP_S": "0.2",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
}


def test_preemptions_and_kv_peak_recorded_and_shown(model_dir: Path) -> None:
    env = {**os.environ, **FAKE_ENV}
    # 96 prompts of 1088 tokens at once into a ~19k-token KV cache: with 128 sequences the cache
    # fills and vLLM preempts; with 4 sequences at most 4 requests hold KV, the rest wait.
    done = run_autotune(
        "tune", str(model_dir), "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--trials", "2",
        "--repeats", "1", "--gpu-memory-utilization", "0.80", "--max-num-seqs", "4:128",
        "--enqueue", "max_num_seqs=4", "--max-num-batched-tokens", "2048",
        "--max-model-len", "4096", "--input-len", "1024", "--output-len", "64",
        "--num-prompts", "96", "--quiet", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    listing = run_autotune("trials", str(model_dir), "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    rows: list[dict[str, Any]] = next(iter(json.loads(listing.stdout).values()))
    by_seqs = {r["args"]["max_num_seqs"]: r for r in rows}
    busy, light = by_seqs[128], by_seqs[4]
    assert busy["outcome"] == light["outcome"] == "ok"
    assert busy["preemptions"] > 0 and light["preemptions"] == 0
    for r in (busy, light):
        assert 0 < r["peak_kv_cache_usage_pct"] <= 100
        assert r["peak_requests_running"] >= 1 and r["peak_requests_waiting"] >= 0
    assert busy["peak_kv_cache_usage_pct"] > light["peak_kv_cache_usage_pct"]
    assert light["peak_requests_running"] <= 4 and light["peak_requests_waiting"] > 0
    assert busy["peak_requests_running"] <= 128

    table = run_autotune("trials", str(model_dir), env=env)
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "KV peak %" in line)
    assert "preempt" in header
    busy_line = next(line for line in table.stdout.splitlines() if line.strip("│ ").startswith("0"))
    cells = [c.strip() for c in busy_line.split("│")]
    assert f"{busy['peak_kv_cache_usage_pct']:.1f}" in cells
    assert f"{busy['preemptions']:,}" in cells

    (path,) = Path(env["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert profile["schema_version"] == 2
    chosen = next(r for r in rows if r["number"] == profile["provenance"]["trial"])
    for key in ("preemptions", "peak_kv_cache_usage_pct"):
        assert profile["metrics"][key] == chosen[key]
    assert profile["soak"]["passed"] is True
    assert 0 < profile["soak"]["peak_kv_cache_usage_pct"] <= 100
