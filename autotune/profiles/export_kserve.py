"""``--format kserve``: a KServe ``ServingRuntime`` running ``vllm serve`` on the image of the
profile's vLLM release, and an ``InferenceService`` (serving.kserve.io/v1beta1) whose predictor
names it (``modelFormat: huggingface``) with the profile's flags, GPUs, cache, token and probes.

KServe puts a runtime's arguments before the predictor's, and its own Hugging Face runtime
(``kserve/huggingfaceserver``) ships a vLLM of its own choosing: the runtime here has no
arguments and the image the profile was measured on."""

from __future__ import annotations

from typing import Any

from autotune.profiles import export_k8s as k8s
from autotune.profiles.store import Profile

PORT = 8080  # KServe's predictor port
FORMAT = {"name": "huggingface", "version": "1"}
MODE = "serving.kserve.io/deploymentMode"


def runtime_name(image: str) -> str:
    return k8s.resource_name("runtime", image.rpartition("/")[2])


def kserve(
    profile: Profile, *, args: list[str], options: k8s.ExportOptions
) -> list[dict[str, Any]]:
    image = k8s.image(profile, options)
    runtime = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": runtime_name(image), "annotations": {"autotune/image": image}},
        "spec": {
            "supportedModelFormats": [FORMAT | {"autoSelect": False}],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image,
                    "command": ["vllm", "serve"],
                    "ports": [{"containerPort": PORT, "protocol": "TCP"}],
                }
            ],
        },
    }
    serve = [*args, *k8s.missing_parallel_flags(profile), "--host", "0.0.0.0", "--port", str(PORT)]
    main = k8s.container(profile, options, args=serve, port=PORT)
    for key in ("name", "image", "command", "ports"):  # the runtime's
        del main[key]
    pod = k8s.pod_spec(profile, options, main)
    del pod["containers"]
    predictor = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "model": {"modelFormat": dict(FORMAT), "runtime": runtime_name(image), **main},
        **pod,
    }
    service = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": k8s.resource_name(profile.model_name),
            # a plain Deployment: Knative limits volumes and probes
            "annotations": {MODE: "RawDeployment", **k8s.metadata_annotations(profile)},
        },
        "spec": {"predictor": predictor},
    }
    return [runtime, service]
