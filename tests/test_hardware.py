from __future__ import annotations

import pytest

from autotune.errors import UserError
from autotune.hardware import detect_nvml, parse_gpu_spec, resolve_hardware


def test_parse_gpu_spec() -> None:
    hw = parse_gpu_spec("NVIDIA H100 80GB HBM3:79.6x2", source="flag")
    assert (hw.gpu_name, hw.memory_gib, hw.count) == ("NVIDIA H100 80GB HBM3", 79.6, 2)
    assert hw.key == "nvidia-h100-80gb-hbm3-80gib-x2"
    assert parse_gpu_spec("L4:24", source="env").count == 1


@pytest.mark.parametrize("bad", ["H100", "H100:abc", ":80", "H100:0", "H100:80x0"])
def test_bad_gpu_spec(bad: str) -> None:
    with pytest.raises(UserError, match="GPU spec"):
        parse_gpu_spec(bad, source="flag")


def test_flag_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_GPU", "L4:24")
    assert resolve_hardware(gpu="A100:80").gpu_name == "A100"
    hw = resolve_hardware()
    assert hw.gpu_name == "L4" and hw.source == "env"


@pytest.mark.skipif(detect_nvml() is not None, reason="this machine has a GPU")
def test_no_gpu_and_no_flag_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"no GPU found by NVML.*--gpu"):
        resolve_hardware()


def test_device_choice() -> None:
    from autotune.hardware import choose_device

    assert choose_device(device="auto", gpu=None, engine_version="0.32.0+cpu") == "cpu"
    assert choose_device(device="auto", gpu=None, engine_version="0.33.0") == "gpu"
    assert choose_device(device="auto", gpu="L4:24", engine_version="0.32.0+cpu") == "gpu"
    assert choose_device(device="cpu", gpu=None, engine_version=None) == "cpu"


def test_cpu_fingerprint() -> None:
    cpu = resolve_hardware(device="cpu")
    assert cpu.is_cpu and cpu.cores and cpu.memory_gib > 0
    assert cpu.key.startswith("cpu-") and "CPU backend" in cpu.describe()
    with pytest.raises(UserError, match="contradict"):
        resolve_hardware(gpu="L4:24", device="cpu")


def test_engine_version_reads_metadata_without_importing(tmp_path) -> None:
    import sys

    from autotune.engine.launcher import engine_version

    site = tmp_path / "site"
    (site / "vllm-0.32.0+cpu.dist-info").mkdir(parents=True)
    (site / "vllm-0.32.0+cpu.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n"
    )
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    vllm = tmp_path / "vllm"
    vllm.write_text(f"#!{python}\nraise SystemExit('must not run')\n")
    vllm.chmod(0o755)
    assert engine_version([str(vllm), "serve"]) == "0.32.0+cpu"
    assert engine_version([str(python), "-m", "vllm.entrypoints.cli.main", "serve"]) == "0.32.0+cpu"
    fake = [sys.executable, "-m", "autotune.testing.fake_engine", "serve"]
    assert engine_version(fake) == "0.33.0+fake"  # any `X serve` is asked `X --version`
    assert engine_version([sys.executable, "-m", "autotune.testing.fake_engine"]) is None
