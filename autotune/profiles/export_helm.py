"""``--format helm-values``: a values file for vLLM's production-stack chart
(github.com/vllm-project/production-stack, ``helm/values.yaml``): one
``servingEngineSpec.modelSpec`` entry with the image of the profile's vLLM release, the GPUs,
the chart's own ``vllmConfig`` keys for the settings it knows and ``extraArgs`` for the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotune.engine.launcher import vllm_flags
from autotune.profiles import export_k8s as k8s
from autotune.profiles.store import Profile

# The chart writes these vllmConfig keys as the flags; the rest of the profile goes to extraArgs.
CHART_KEYS = {
    "max_model_len": "maxModelLen",
    "gpu_memory_utilization": "gpuMemoryUtilization",
    "max_num_seqs": "maxNumSeqs",
    "dtype": "dtype",
}
_TP_FLAGS = ("-tp", "--tensor-parallel-size")


def _without_tp(extra: Sequence[str]) -> list[str]:
    """The saved extra arguments less the tensor parallel size (``tensorParallelSize`` says it)."""
    out: list[str] = []
    skip = False
    for arg in extra:
        if skip:
            skip = False
        elif arg in _TP_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f"{f}=" for f in _TP_FLAGS)):
            out.append(arg)
    return out


def vllm_config(profile: Profile) -> dict[str, Any]:
    """``vllmConfig``: the chart always writes ``--(no-)enable-prefix-caching``, so the profile's
    setting (vLLM's default, on, when it has none) is given explicitly."""
    args = dict(profile.vllm_args)
    config: dict[str, Any] = {
        chart: args.pop(name) for name, chart in CHART_KEYS.items() if name in args
    }
    config["enablePrefixCaching"] = bool(args.pop("enable_prefix_caching", True))
    if "enable_chunked_prefill" in args:
        config["enableChunkedPrefill"] = bool(args.pop("enable_chunked_prefill"))
    config["tensorParallelSize"] = k8s.sizes(profile)["tensor_parallel_size"]  # mounts /dev/shm
    extra = [*profile.extra_args, *k8s.missing_parallel_flags(profile)]
    config["extraArgs"] = [*vllm_flags(args), *_without_tp(extra)]
    return config


def helm_values(profile: Profile, *, model: str, options: k8s.ExportOptions) -> dict[str, Any]:
    repository, _, tag = k8s.image(profile, options).rpartition(":")
    if not repository or "/" in tag:  # no tag: the chart needs one
        repository, tag = k8s.image(profile, options), "latest"
    volumes, mounts = k8s.volumes(options)
    requests = k8s.requests(profile)
    spec: dict[str, Any] = {
        "name": k8s.resource_name(profile.model_name)[:40].strip("-"),
        "annotations": k8s.metadata_annotations(profile),
        "repository": repository,
        "tag": tag,
        "modelURL": model,
        "replicaCount": 1,
        "requestCPU": requests["cpu"],
        "requestMemory": requests["memory"],
        "requestGPU": k8s.gpus(profile),
        "vllmConfig": vllm_config(profile),
        "env": k8s.hf_token_env(options),
        "extraVolumes": [v for v in volumes if v["name"] != "shm"],  # the chart mounts its own
        "extraVolumeMounts": [m for m in mounts if m["name"] != "shm"],
    }
    if k8s.is_cpu(profile):
        spec["runtimeClassName"] = ""  # not the chart's default "nvidia"
    product = k8s.gpu_product(profile)
    if product is not None:
        match = {"key": k8s.GPU_PRODUCT, "operator": "In", "values": [product]}
        spec["nodeSelectorTerms"] = [{"matchExpressions": [match]}]
    startup = k8s.probes(k8s.PORT)["startupProbe"]
    return {"servingEngineSpec": {"startupProbe": startup, "modelSpec": [spec]}}
