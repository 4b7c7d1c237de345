"""``autotune plan``: ``--device auto`` like every other command, and no negative KV rows."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.conftest import run_autotune


def fake_vllm(tmp_path: Path, version: str) -> str:
    """A ``vllm`` that only answers ``--version`` (what ``--device auto`` asks)."""
    exe = tmp_path / "bin" / "vllm"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(f"#!/bin/sh\necho {version}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return f"{exe} serve"


def test_small_gpus_show_does_not_fit_not_negative_rows(model_dir: Path) -> None:
    done = run_autotune("plan", model_dir, "--gpu", "L4:24", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert any(not r["fits"] for r in rows) and any(r["fits"] for r in rows)
    for r in rows:
        numbers = (r["kv_cache_bytes"], r["kv_cache_tokens"], r["max_model_len_fit"])
        assert min(*numbers, r["max_concurrency"]) >= 0
        assert r["fits"] == (r["kv_cache_tokens"] > 0 and r["max_model_len_fit"] > 0)
    utils = [r["gpu_memory_utilization"] for r in rows]
    fits = [r["fits"] for r in rows]
    assert fits == sorted(fits)  # more memory never fits less
    assert utils == sorted(utils)
    table = run_autotune("plan", model_dir, "--gpu", "L4:24", env={"COLUMNS": "100"}, timeout=60)
    assert table.returncode == 0, table.stderr
    lines = [ln for ln in table.stdout.splitlines() if ln.startswith("│")]
    assert sum("does not fit" in ln for ln in lines) == fits.count(False)
    assert "-0" not in table.stdout.replace("-0.", "")  # no negative number anywhere


def test_a_model_that_never_fits_has_only_such_rows(model_dir: Path) -> None:
    done = run_autotune("plan", model_dir, "--gpu", "T4:16", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert rows and not any(r["fits"] for r in rows)
    assert all(r["kv_cache_bytes"] == 0 == r["kv_cache_tokens"] for r in rows)


@pytest.mark.parametrize(("version", "cpu"), [("0.33.0+cpu", True), ("0.33.0", False)])
def test_device_auto_asks_the_vllm_to_launch(
    tmp_path: Path, model_dir: Path, version: str, cpu: bool
) -> None:
    cmd = fake_vllm(tmp_path, version)
    gpu = () if cpu else ("--gpu", "L4:24")
    done = run_autotune("plan", model_dir, "--vllm-cmd", cmd, *gpu, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert ("CPU backend" in data["hardware"]) is cpu
    first = data["rows"][0]
    assert (first["gpu_memory_utilization"] is None) is cpu
    assert (first["kv_cache_memory_bytes"] is not None) is cpu


def test_device_auto_on_a_gpu_build_without_a_gpu_is_one_line(
    tmp_path: Path, model_dir: Path
) -> None:
    done = run_autotune("plan", model_dir, "--vllm-cmd", fake_vllm(tmp_path, "0.33.0"), timeout=60)
    if done.returncode == 0:  # this machine has a GPU NVML can see
        pytest.skip("a GPU is visible")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "autotune: error: no GPU found" in done.stderr
