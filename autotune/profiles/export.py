"""Export a profile for other tools: a YAML for ``vllm serve --config``, a command line, JSON, a
Kubernetes Deployment and Service (export_k8s), values for vLLM's production-stack Helm chart
(export_helm) or a KServe InferenceService (export_kserve), on the image of the profile's vLLM
release.

A profile may come from someone else, and ``vllm serve --config`` trusts its file: the profile is
validated again here, every format is built by ``yaml.safe_dump``, ``json.dumps`` or
``shlex.join``, and the header's comments hold only JSON-quoted ASCII, so no value can start a
line of its own (inject a key such as ``trust-remote-code``)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

import yaml

from autotune.errors import UserError
from autotune.profiles.export_helm import helm_values
from autotune.profiles.export_k8s import ExportOptions, k8s
from autotune.profiles.export_kserve import kserve
from autotune.profiles.match import serve_argv
from autotune.profiles.store import Profile
from autotune.profiles.values import bad_char

FORMATS = ("vllm-config", "cli", "json", "k8s", "helm-values", "kserve")
CLUSTER_FORMATS = ("k8s", "helm-values", "kserve")


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


def _quoted(text: str) -> str:
    """``text`` for a comment: a JSON string in ASCII (no line break can survive it)."""
    return json.dumps(text, ensure_ascii=True)


def _word(text: str) -> str:
    """``text`` as one shell word for a comment (JSON-quoted if it is not printable ASCII)."""
    return shlex.quote(text) if text.isascii() and text.isprintable() else _quoted(text)


def _header(profile: Profile, model: str, *, use: str | None = None) -> str:
    return (
        f"# autotune profile for {_quoted(profile.model_name)} on "
        f"{_quoted(profile.hardware_key)}, workload {_quoted(profile.workload_signature)}\n"
        f"# use: {use or f'vllm serve {_word(model)} --config FILE'}\n"
    )


def export(
    profile: Profile,
    *,
    fmt: str,
    model: str,
    command: Sequence[str],
    options: ExportOptions | None = None,
) -> str:
    """The profile in ``fmt`` as text for stdout; a profile that is not valid (built in code
    rather than loaded) is refused like a bad file. ``options``: image, cache and token of the
    cluster formats."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if bad_char(model) is not None:
        raise UserError(f"the model {model!a} holds a control character")
    profile = Profile.from_dict(profile.to_dict(), source="the profile to export")
    if fmt == "vllm-config":
        return _header(profile, model) + _dump(vllm_config(profile))
    if fmt == "cli":
        return shlex.join(serve_argv(command=command, model=model, profile=profile)) + "\n"
    if fmt == "json":
        return json.dumps(profile.to_dict(), indent=2) + "\n"
    options = options or ExportOptions()
    if fmt == "helm-values":
        values = helm_values(profile, model=model, options=options)
        use = "helm install vllm vllm/vllm-stack -f FILE"
        return _header(profile, model, use=use) + _dump(_plain(values))
    args = serve_argv(command=[], model=model, profile=profile)
    build = k8s if fmt == "k8s" else kserve
    docs = _plain(build(profile, args=args, options=options))
    return _header(profile, model, use="kubectl apply -f FILE") + yaml.safe_dump_all(
        docs, sort_keys=False
    )


def _plain(data: Any) -> Any:
    """A copy that shares no object (so YAML writes no anchors and aliases)."""
    return json.loads(json.dumps(data))


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False)
