"""``profiles export --format k8s|helm-values|kserve`` of a GPU profile with tensor parallel size
2 and of a CPU profile: valid against the Kubernetes 1.30 schemas (strict), the production-stack
chart's values schema and KServe's CRD header; image of the profile's vLLM release; GPUs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from autotune.errors import UserError
from autotune.profiles.export import export
from autotune.profiles.export_k8s import ExportOptions
from autotune.profiles.store import Profile
from tests.profiles.test_store import make

K8S_VERSION = "1.30"
HELM_SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "production_stack_values.schema.json").read_text()
)


def gpu_tp2() -> Profile:
    return replace(
        make("2026-01-01"),
        hardware={
            "gpu": "NVIDIA H100 80GB HBM3",
            "memory_gib": 79.6,
            "count": 2,
            "key": "nvidia-h100-80gb-hbm3-80gib-x2",
        },
        vllm_version="0.32.0",
        vllm_args={
            "gpu_memory_utilization": 0.9,
            "max_num_seqs": 64,
            "max_model_len": 8192,
            "max_num_batched_tokens": 4096,
        },
        extra_args=["--enforce-eager", "--tensor-parallel-size", "2"],
        parallel={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
    )


def cpu() -> Profile:
    return replace(
        make("2026-01-01"),
        hardware={"gpu": "Intel(R) Xeon(R) Processor", "memory_gib": 23.5, "count": 1,
                  "device": "cpu", "cores": 2, "key": "cpu-intel-r-xeon-r-processor-2c-24gib"},
        vllm_version="0.32.0+cpu",
        vllm_args={"kv_cache_memory_bytes": 4 << 30, "max_num_seqs": 128, "max_model_len": 2048},
        extra_args=["--dtype", "bfloat16"],
    )  # fmt: skip


def docs(profile: Profile, fmt: str, **options: Any) -> list[dict[str, Any]]:
    text = export(profile, fmt=fmt, model="org/m", command=[], options=ExportOptions(**options))
    assert "&id" not in text and "*id" not in text, "no YAML anchors"
    return [d for d in yaml.safe_load_all(text) if d is not None]


def gpu_limit(container: dict[str, Any]) -> Any:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("profile", [gpu_tp2(), cpu()], ids=["gpu-tp2", "cpu"])
def test_k8s_deployment_and_service_are_valid(profile: Profile) -> None:
    found = docs(profile, "k8s")
    for doc in found:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployment, service = found
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]["spec"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = pod["containers"]
    assert container["command"] == ["vllm", "serve"] and container["args"][0] == "org/m"
    assert value(container["args"], "--max-num-seqs") == str(profile.vllm_args["max_num_seqs"])
    assert value(container["args"], "--port") == "8000"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/root/.cache/huggingface"]]
    env = {e["name"]: e for e in container["env"]}
    ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True and ref["name"] == "hf-token"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600, "model load takes minutes"
    if profile.hardware.get("device") == "cpu":
        assert container["image"] == "vllm/vllm-openai-cpu:v0.32.0"
        assert gpu_limit(container) is None and "nodeSelector" not in pod
        assert container["resources"]["requests"]["cpu"] == 2
    else:
        assert container["image"] == "vllm/vllm-openai:v0.32.0"
        assert gpu_limit(container) == 2
        assert value(container["args"], "--tensor-parallel-size") == "2"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_k8s_options_image_pvc_secret() -> None:
    found = docs(gpu_tp2(), "k8s", image="registry.local/vllm:patched", hf_cache_pvc="hf-models",
                 hf_token_secret="my-hf")  # fmt: skip
    pod = found[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/vllm:patched"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["hf-models"]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "my-hf"


def test_pipeline_parallel_counts_and_a_missing_size_flag_is_added() -> None:
    profile = replace(
        gpu_tp2(),
        extra_args=["-tp", "2", "--pipeline-parallel-size=2"],
        parallel={"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
    )
    (container,) = docs(profile, "k8s")[0]["spec"]["template"]["spec"]["containers"]
    assert gpu_limit(container) == 4
    recorded_only = replace(gpu_tp2(), extra_args=[])  # parallel says 2, the arguments do not
    (container,) = docs(recorded_only, "k8s")[0]["spec"]["template"]["spec"]["containers"]
    assert gpu_limit(container) == 2 and value(container["args"], "--tensor-parallel-size") == "2"


@pytest.mark.parametrize("profile", [gpu_tp2(), cpu()], ids=["gpu-tp2", "cpu"])
def test_helm_values_match_the_chart_schema(profile: Profile) -> None:
    (values,) = docs(profile, "helm-values")
    jsonschema.validate(values, HELM_SCHEMA)
    (spec,) = values["servingEngineSpec"]["modelSpec"]
    config = spec["vllmConfig"]
    assert spec["modelURL"] == "org/m" and spec["tag"] == "v0.32.0"
    assert config["maxNumSeqs"] == profile.vllm_args["max_num_seqs"]
    assert config["maxModelLen"] == profile.vllm_args["max_model_len"]
    assert "--max-num-seqs" not in config["extraArgs"]  # said once, by the chart
    # the Kubernetes objects the chart copies into its pod
    container = {"name": "c", "volumeMounts": spec["extraVolumeMounts"], "env": spec["env"]}
    pod = {"containers": [container], "volumes": spec["extraVolumes"]}
    if "nodeSelectorTerms" in spec:
        terms = {"nodeSelectorTerms": spec["nodeSelectorTerms"]}
        pod["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}
        }
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod},
        K8S_VERSION,
        strict=True,
    )
    assert {m["mountPath"] for m in spec["extraVolumeMounts"]} == {"/root/.cache/huggingface"}
    if profile.hardware.get("device") == "cpu":
        assert spec["repository"] == "vllm/vllm-openai-cpu" and spec["requestGPU"] == 0
        assert spec["runtimeClassName"] == "" and "nodeSelectorTerms" not in spec
        assert config["extraArgs"][:2] == ["--kv-cache-memory-bytes", str(4 << 30)]
    else:
        assert spec["repository"] == "vllm/vllm-openai" and spec["requestGPU"] == 2
        assert config["tensorParallelSize"] == 2 and config["gpuMemoryUtilization"] == 0.9
        assert "--tensor-parallel-size" not in config["extraArgs"]
        assert config["extraArgs"] == ["--max-num-batched-tokens", "4096", "--enforce-eager"]
        (term,) = spec["nodeSelectorTerms"]
        assert term["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]


def test_helm_schema_catches_a_misspelt_key() -> None:
    (values,) = docs(gpu_tp2(), "helm-values")
    values["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]["maxNumSeq"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, HELM_SCHEMA)


def as_pod(runtime: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """The pod KServe makes: the runtime's container with the predictor's fields merged in."""
    predictor = dict(service["spec"]["predictor"])
    model = dict(predictor.pop("model"))
    for key in ("minReplicas", "maxReplicas"):
        predictor.pop(key)
    for key in ("modelFormat", "runtime"):
        model.pop(key)
    (base,) = runtime["spec"]["containers"]
    container = base | model | {"args": [*base.get("args", []), *model["args"]]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
            "spec": {**predictor, "containers": [container]}}  # fmt: skip


@pytest.mark.parametrize("profile", [gpu_tp2(), cpu()], ids=["gpu-tp2", "cpu"])
def test_kserve_inference_service(profile: Profile) -> None:
    runtime, service = docs(profile, "kserve")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ServingRuntime"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    for doc in (runtime, service):
        kubernetes_validate.validate(  # the metadata, as any object's
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
            K8S_VERSION, strict=True,
        )  # fmt: skip
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert {"name": "huggingface", "version": "1"}.items() <= formats[0].items()
    pod = as_pod(runtime, service)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["vllm", "serve"] and container["args"][0] == "org/m"
    assert value(container["args"], "--port") == "8080"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["startupProbe"]["httpGet"]["port"] == 8080
    if profile.hardware.get("device") == "cpu":
        assert container["image"] == "vllm/vllm-openai-cpu:v0.32.0"
        assert gpu_limit(container) is None and "nodeSelector" not in pod["spec"]
    else:
        assert container["image"] == "vllm/vllm-openai:v0.32.0"
        assert gpu_limit(container) == 2


@pytest.mark.parametrize("fmt", ["k8s", "helm-values", "kserve"])
def test_a_profile_without_a_released_version_needs_image(fmt: str) -> None:
    for version in (None, "0.33.0.dev12+gabc", "main"):
        profile = replace(gpu_tp2(), vllm_version=version)
        with pytest.raises(UserError, match="--image"):
            export(profile, fmt=fmt, model="m", command=[])
        assert docs(profile, fmt, image="mine/vllm:1")


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"image": "bad image"}, "--image"), ({"hf_cache_pvc": "Not_A_Name"}, "--hf-cache-pvc"),
     ({"hf_token_secret": "x\ny"}, "--hf-token-secret")],
)  # fmt: skip
def test_bad_options_are_one_line_errors(options: dict[str, str], flag: str) -> None:
    with pytest.raises(UserError, match=flag) as err:
        ExportOptions(**options)
    assert "\n" not in str(err.value)
