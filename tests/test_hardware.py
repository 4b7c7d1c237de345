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
