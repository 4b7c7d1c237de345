from __future__ import annotations

import json
import shlex
from dataclasses import replace

import yaml

from autotune.engine.multimodal import limit_arg
from autotune.profiles.export import export, vllm_config
from autotune.profiles.store import Profile
from tests.profiles.test_store import make


def profile() -> Profile:
    return replace(
        make("2026-01-01", limit_mm_per_prompt=limit_arg(2)),
        extra_args=["--enforce-eager", "--dtype", "bfloat16", "--block-size=16"],
    )


def test_vllm_config_keys() -> None:
    config = vllm_config(profile())
    assert config == {
        "gpu-memory-utilization": 0.9,
        "max-num-seqs": 64,
        "limit-mm-per-prompt": '{"image": 2}',
        "enforce-eager": True,
        "dtype": "bfloat16",
        "block-size": "16",
    }
    text = export(profile(), fmt="vllm-config", model="m", command=["vllm", "serve"])
    assert text.startswith("# autotune profile") and yaml.safe_load(text) == config


def test_cli_json_and_k8s() -> None:
    cli = export(profile(), fmt="cli", model="org/m", command=["vllm", "serve"])
    argv = shlex.split(cli)
    assert argv[:3] == ["vllm", "serve", "org/m"] and argv[argv.index("--max-num-seqs") + 1] == "64"
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 2}
    data = json.loads(export(profile(), fmt="json", model="m", command=[]))
    assert data["schema_version"] == 2 and data["vllm_args"]["max_num_seqs"] == 64
    k8s, service = yaml.safe_load_all(export(profile(), fmt="k8s", model="org/m", command=[]))
    assert k8s["kind"] == "Deployment" and service["kind"] == "Service"
    (container,) = k8s["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"vllm/vllm-openai:v{profile().vllm_version}"
    assert container["args"][0] == "org/m" and "--max-num-seqs" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
