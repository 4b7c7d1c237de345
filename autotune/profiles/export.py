"""Export a profile for other tools: a YAML for ``vllm serve --config``, a command line, JSON, or
a Kubernetes Deployment on the vLLM OpenAI image.

A profile may come from someone else, and ``vllm serve --config`` trusts its file: the profile is
validated again here, every format is built by ``yaml.safe_dump``, ``json.dumps`` or
``shlex.join``, and the header's comments hold only JSON-quoted ASCII, so no value can start a
line of its own (inject a key such as ``trust-remote-code``)."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from autotune.errors import UserError
from autotune.profiles.match import serve_argv
from autotune.profiles.store import Profile
from autotune.profiles.values import bad_char

FORMATS = ("vllm-config", "cli", "json", "k8s")
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"  # pinned; override the tag for your vLLM version


def _extra_pairs(extra: Sequence[str]) -> dict[str, Any]:
    """``["--enforce-eager", "--dtype", "bf16"]`` → ``{"enforce-eager": True, "dtype": "bf16"}``."""
    out: dict[str, Any] = {}
    key: str | None = None
    for arg in extra:
        if arg.startswith("-"):
            name, eq, value = arg.lstrip("-").partition("=")
            out[name] = value if eq else True
            key = None if eq else name
        elif key is not None:
            out[key] = arg
            key = None
    return out


def vllm_config(profile: Profile) -> dict[str, Any]:
    """The profile's arguments as ``vllm serve --config`` keys (the model stays on the CLI)."""
    config: dict[str, Any] = {
        # a tuned switch that is off: its --no- flag (a false value would be dropped)
        (f"no-{k}" if v is False else k).replace("_", "-"): True if v is False else v
        for k, v in profile.vllm_args.items()
    }
    config.update(_extra_pairs(profile.extra_args))
    return config


def _k8s(profile: Profile, model: str) -> dict[str, Any]:
    name = re.sub(r"[^a-z0-9-]+", "-", f"vllm-{profile.model_name}".lower()).strip("-")[:63]
    args = serve_argv(command=[], model=model, profile=profile)
    gpus = int(profile.hardware.get("count") or 1)
    container: dict[str, Any] = {
        "name": "vllm",
        "image": VLLM_IMAGE,
        "args": [*args, "--host", "0.0.0.0", "--port", "8000"],
        "ports": [{"containerPort": 8000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5},
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "annotations": {
                "autotune/profile": f"{profile.hardware_key} {profile.workload_signature}",
                "autotune/gpu": str(profile.hardware.get("gpu")),
            },
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
        },
    }


def _quoted(text: str) -> str:
    """``text`` for a comment: a JSON string in ASCII (no line break can survive it)."""
    return json.dumps(text, ensure_ascii=True)


def _word(text: str) -> str:
    """``text`` as one shell word for a comment (JSON-quoted if it is not printable ASCII)."""
    return shlex.quote(text) if text.isascii() and text.isprintable() else _quoted(text)


def _header(profile: Profile, model: str) -> str:
    return (
        f"# autotune profile for {_quoted(profile.model_name)} on "
        f"{_quoted(profile.hardware_key)}, workload {_quoted(profile.workload_signature)}\n"
        f"# use: vllm serve {_word(model)} --config FILE\n"
    )


def export(profile: Profile, *, fmt: str, model: str, command: Sequence[str]) -> str:
    """The profile in ``fmt`` as text for stdout; a profile that is not valid (built in code
    rather than loaded) is refused like a bad file."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if bad_char(model) is not None:
        raise UserError(f"the model {model!a} holds a control character")
    profile = Profile.from_dict(profile.to_dict(), source="the profile to export")
    if fmt == "vllm-config":
        return _header(profile, model) + yaml.safe_dump(vllm_config(profile), sort_keys=False)
    if fmt == "cli":
        return shlex.join(serve_argv(command=command, model=model, profile=profile)) + "\n"
    if fmt == "json":
        return json.dumps(profile.to_dict(), indent=2) + "\n"
    return yaml.safe_dump(_k8s(profile, model), sort_keys=False)
