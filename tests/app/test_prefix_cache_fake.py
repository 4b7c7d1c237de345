"""Integration: ``--tune prefix-caching`` measured with cache hits. Prompts that share one of a
few system prompts (``--shared-prefix-len``/``--prefix-groups``) make the fake engine's prefix
cache (a test double of vLLM's) hit; the hit rate read from ``/metrics`` is stored per trial,
shown by ``autotune trials`` and carried by the profile, and prefix caching on wins. Prompts
that share nothing hit nothing."""

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
    "AUTOTUNE_FAKE_TIME_SCALE": "0.5",  # simulated steps, not HTTP overhead, set the speed
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
    "AUTOTUNE_FAKE_STEP_TOKEN_US": "100",  # prefill dominates: what the cache saves shows
}
TUNE = [
    "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--repeats", "1", "--tune", "prefix-caching",
    "--gpu-memory-utilization", "0.85", "--max-num-seqs", "16", "--max-num-batched-tokens", "512",
    "--max-model-len", "2048", "--input-len", "512", "--output-len", "8", "--num-prompts", "64",
    "--quiet",
]  # fmt: skip


def tune(model_dir: Path, *args: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Tune; return the profile, the study's trial rows (``trials --json``) and its table."""
    env = {**os.environ, **FAKE_ENV}
    done = run_autotune("tune", str(model_dir), *TUNE, *args, env=env)
    assert done.returncode == 0, done.stderr
    listing = run_autotune("trials", str(model_dir), "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    (rows,) = json.loads(listing.stdout).values()
    table = run_autotune("trials", str(model_dir), env={**env, "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    (path,) = Path(env["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    return yaml.safe_load(path.read_text()), rows, table.stdout


def test_shared_prefixes_hit_the_cache_and_prefix_caching_wins(model_dir: Path) -> None:
    profile, rows, table = tune(
        model_dir, "--shared-prefix-len", "448", "--prefix-groups", "2", "--trials", "2",
        "--enqueue", "enable_prefix_caching=false",
    )  # fmt: skip
    by_caching = {r["args"]["enable_prefix_caching"]: r for r in rows}
    on, off = by_caching[True], by_caching[False]
    assert on["outcome"] == off["outcome"] == "ok"
    assert on["prefix_cache_hit_rate"] > 0.5  # 448 of 512 tokens shared, in 16-token blocks
    assert off["prefix_cache_hit_rate"] is None  # nothing looked up: vLLM counts 0 of 0
    assert on["throughput"] > off["throughput"]
    assert profile["vllm_args"]["enable_prefix_caching"] is True
    assert profile["provenance"]["trial"] == on["number"]
    assert profile["metrics"]["prefix_cache_hit_rate"] == on["prefix_cache_hit_rate"]
    header = next(line for line in table.splitlines() if "tok/s" in line)
    assert "prefix hit" in header
    on_line = next(line for line in table.splitlines() if line.strip("│ ").startswith(
        str(on["number"])))  # fmt: skip
    assert f"{on['prefix_cache_hit_rate']:.0%}" in [c.strip() for c in on_line.split("│")]


def test_distinct_prompts_hit_nothing(model_dir: Path) -> None:
    profile, rows, table = tune(model_dir, "--trials", "1")
    (row,) = rows
    assert row["args"]["enable_prefix_caching"] is True  # vLLM's default, tried first
    assert row["prefix_cache_hit_rate"] is not None and row["prefix_cache_hit_rate"] < 0.05
    assert profile["metrics"]["prefix_cache_hit_rate"] == row["prefix_cache_hit_rate"]
    assert "prefix hit" not in table  # no trial hit the cache: no column
