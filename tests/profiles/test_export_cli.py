"""``autotune profiles export`` from the command line: the cluster formats and their options,
and one clear line for a bad option."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import yaml

from autotune.hardware import parse_gpu_spec
from autotune.model import resolve_model
from autotune.profiles.store import ProfileStore
from tests.conftest import FAKE_CMD, run_autotune
from tests.profiles.test_store import make


def save_profile(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    hardware = parse_gpu_spec("L4:24", source="flag")
    profile = replace(
        make("2026-01-01"),
        model={"id": str(model_dir), "name": spec.name, "config_hash": spec.config_hash},
        hardware=hardware.to_dict(),
        vllm_version="0.33.1",  # the fake engine is 0.33: another patch release
    )
    ProfileStore(Path(os.environ["AUTOTUNE_PROFILES_DIR"])).save(profile)


def export(model_dir: Path, *args: str) -> list[dict[str, object]]:
    done = run_autotune("profiles", "export", model_dir, "--gpu", "L4:24", "--vllm-cmd",
                        FAKE_CMD, *args, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def test_k8s_with_image_and_cache_claim(model_dir: Path) -> None:
    save_profile(model_dir)
    deployment, _ = export(model_dir, "--format", "k8s", "--image", "reg.local/vllm:mine",
                           "--hf-cache-pvc", "models", "--hf-token-secret", "hf")  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    (container,) = pod["containers"]
    assert container["image"] == "reg.local/vllm:mine"
    assert {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "L4"}


def test_helm_values_and_kserve_take_the_profile_release(model_dir: Path) -> None:
    save_profile(model_dir)
    (values,) = export(model_dir, "--format", "helm-values")
    (spec,) = values["servingEngineSpec"]["modelSpec"]  # type: ignore[index]
    assert (spec["repository"], spec["tag"]) == ("vllm/vllm-openai", "v0.33.1")
    runtime, _ = export(model_dir, "--format", "kserve")
    assert runtime["spec"]["containers"][0]["image"] == "vllm/vllm-openai:v0.33.1"  # type: ignore[index]


def test_a_bad_option_is_one_line(model_dir: Path) -> None:
    save_profile(model_dir)
    done = run_autotune("profiles", "export", model_dir, "--gpu", "L4:24", "--format", "k8s",
                        "--image", "not an image", timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--image" in lines[0], done.stderr
