"""The Kubernetes parts every cluster export shares, and ``--format k8s`` (a Deployment and a
Service): the image of the profile's vLLM release, GPUs = tensor × pipeline parallel size (none
for the CPU backend), ``/dev/shm`` in memory, a Hugging Face cache volume, ``HF_TOKEN`` from a
Secret, probes on ``/health`` and a node selector on the GPU product.

Every value comes from a validated profile or a checked option and the documents are dumped by
``yaml.safe_dump_all``: nothing a profile holds can add a key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autotune.engine.safety import MAX_PARALLEL_SIZE, parallel_sizes
from autotune.errors import UserError
from autotune.pins import vllm_image
from autotune.profiles.store import Profile
from autotune.profiles.values import bad_char

PORT = 8000
HF_CACHE = "/root/.cache/huggingface"
HF_TOKEN_KEY = "HF_TOKEN"  # the key in the Secret
GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"  # GPU Feature Discovery's label
STARTUP_S = 30 * 60  # loading weights and compiling take minutes; a big model on a cold cache more
_RELEASE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """What ``profiles export`` adds to a profile for a cluster."""

    image: str | None = None  # default: the official image of the profile's vLLM release
    hf_cache_pvc: str | None = None  # a PersistentVolumeClaim for the HF cache (else emptyDir)
    hf_token_secret: str = "hf-token"  # a Secret with key HF_TOKEN (optional: may not exist)

    def __post_init__(self) -> None:
        if self.image is not None and (bad_char(self.image) or not _IMAGE.fullmatch(self.image)):
            raise UserError(f"--image {self.image!a}: expected an image such as REPO:TAG")
        for flag, name in (("--hf-cache-pvc", self.hf_cache_pvc), ("--hf-token-secret",
                           self.hf_token_secret)):  # fmt: skip
            if name is not None and not _DNS_NAME.fullmatch(name):
                raise UserError(
                    f"{flag} {name!a}: expected a Kubernetes name (lower case, digits, '-', '.')"
                )


def is_cpu(profile: Profile) -> bool:
    """Tuned on vLLM's CPU backend."""
    hardware = profile.hardware
    local = (profile.vllm_version or "").partition("+")[2]
    return (
        hardware.get("device") == "cpu"
        or profile.hardware_key.startswith("cpu-")
        or (local == "cpu")
    )


def image(profile: Profile, options: ExportOptions) -> str:
    """``--image``, else the official image of the profile's vLLM release (the CPU image for a
    CPU profile): the release that was measured is the one that serves."""
    if options.image is not None:
        return options.image
    release = (profile.vllm_version or "").partition("+")[0]
    if not _RELEASE.fullmatch(release):
        raise UserError(
            f"the profile's vLLM version {profile.vllm_version!a} is not a release with an "
            "official image: give the image with --image"
        )
    return vllm_image(release, cpu=is_cpu(profile))


_FLAGS = {"tensor_parallel_size": "--tensor-parallel-size", "pipeline_parallel_size":
          "--pipeline-parallel-size"}  # fmt: skip


def sizes(profile: Profile) -> dict[str, int]:
    """Tensor and pipeline parallel sizes: the profile's, the saved extra arguments winning (as
    in vLLM)."""
    return (
        {"tensor_parallel_size": 1, "pipeline_parallel_size": 1}
        | {k: v for k, v in profile.parallel.items() if k in _FLAGS}
        | parallel_sizes(profile.extra_args)
    )


def missing_parallel_flags(profile: Profile) -> list[str]:
    """``--tensor-parallel-size N`` / ``--pipeline-parallel-size N`` for a size the profile
    records above 1 that its extra arguments do not give (so the GPUs asked for are used)."""
    given = parallel_sizes(profile.extra_args)
    return [
        arg
        for name, size in sizes(profile).items()
        if size > 1 and name not in given
        for arg in (_FLAGS[name], str(size))
    ]


def gpus(profile: Profile) -> int:
    """GPUs one engine uses: tensor × pipeline parallel size; 0 for the CPU backend."""
    if is_cpu(profile):
        return 0
    found = sizes(profile)
    count = found["tensor_parallel_size"] * found["pipeline_parallel_size"]
    if count > MAX_PARALLEL_SIZE:
        raise UserError(
            f"the profile asks for {count} GPUs per engine (at most {MAX_PARALLEL_SIZE})"
        )
    return count


def gpu_product(profile: Profile) -> str | None:
    """The ``nvidia.com/gpu.product`` label of the profile's GPU (GPU Feature Discovery writes
    the NVML name with spaces as dashes, e.g. ``NVIDIA-H100-80GB-HBM3``); None for the CPU
    backend or a name that makes no label."""
    name = profile.hardware.get("gpu")
    if is_cpu(profile) or not isinstance(name, str):
        return None
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip())[:63]
    label = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", label)
    return label or None


def resource_name(*parts: str) -> str:
    """A DNS-1035 label (Deployment, Service, InferenceService names): ``vllm-<model>``."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(("vllm", *parts)).lower())
    return re.sub(r"-+", "-", text)[:63].strip("-")


def requests(profile: Profile) -> dict[str, int | str]:
    """CPU and memory to request: the cores a CPU profile was measured on and its KV cache plus
    8 GiB; 4 cores and 16 GiB of host memory per GPU. Starting points: raise them for big
    models."""
    if is_cpu(profile):
        cores = profile.hardware.get("cores")
        kv = profile.vllm_args.get("kv_cache_memory_bytes")
        kv_gib = -(-kv // 2**30) if isinstance(kv, int) and 0 < kv < 2**50 else 4
        if not isinstance(cores, int) or isinstance(cores, bool) or not 0 < cores <= 4096:
            cores = 4
        return {"cpu": cores, "memory": f"{kv_gib + 8}Gi"}
    count = gpus(profile)
    return {"cpu": 4 * count, "memory": f"{16 * count}Gi"}


def probes(port: int) -> dict[str, Any]:
    """Startup (generous: the model loads first), readiness and liveness on ``/health``."""
    get = {"path": "/health", "port": port}
    return {
        "startupProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": STARTUP_S // 10},
        "readinessProbe": {"httpGet": get, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": 3},
    }


def hf_token_env(options: ExportOptions) -> list[dict[str, Any]]:
    ref = {"name": options.hf_token_secret, "key": HF_TOKEN_KEY, "optional": True}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def volumes(options: ExportOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts): ``/dev/shm`` in memory (PyTorch shares tensors between
    processes there) and the Hugging Face cache."""
    cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": options.hf_cache_pvc}}
        if options.hf_cache_pvc
        else {"emptyDir": {}}
    )
    pod = [{"name": "shm", "emptyDir": {"medium": "Memory"}}, {"name": "hf-cache", **cache}]
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "hf-cache", "mountPath": HF_CACHE}]
    return pod, mounts


def metadata_annotations(profile: Profile) -> dict[str, str]:
    return {
        "autotune/profile": f"{profile.hardware_key} {profile.workload_signature}",
        "autotune/gpu": str(profile.hardware.get("gpu")),
        "autotune/vllm-version": str(profile.vllm_version),
    }


def container(
    profile: Profile, options: ExportOptions, *, args: list[str], port: int
) -> dict[str, Any]:
    """The vLLM container: ``vllm serve`` with ``args``, GPUs, cache, token and probes."""
    count = gpus(profile)
    resources: dict[str, Any] = {"requests": requests(profile)}
    if count:
        resources["limits"] = {GPU: count}
    _, mounts = volumes(options)
    return {
        "name": "vllm",
        "image": image(profile, options),
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"containerPort": port, "name": "http"}],
        "env": hf_token_env(options),
        "resources": resources,
        "volumeMounts": mounts,
        **probes(port),
    }


def pod_spec(profile: Profile, options: ExportOptions, main: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [main], "volumes": volumes(options)[0]}
    product = gpu_product(profile)
    if product is not None:
        pod["nodeSelector"] = {GPU_PRODUCT: product}
    return pod


def k8s(profile: Profile, *, args: list[str], options: ExportOptions) -> list[dict[str, Any]]:
    """A Deployment of one replica and its ClusterIP Service on port 8000."""
    name = resource_name(profile.model_name)
    serve = [*args, *missing_parallel_flags(profile), "--host", "0.0.0.0", "--port", str(PORT)]
    main = container(profile, options, args=serve, port=PORT)
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": metadata_annotations(profile)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec(profile, options, main)},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [deployment, service]
