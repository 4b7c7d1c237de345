"""The vLLM release this project is tested against on GPU, and the official images of a release.

The one place that names it: docker/Dockerfile's ``FROM``, the default image of ``profiles
export`` and the version README.md and docker/README.md give are checked against
``VLLM_RELEASE`` by tests/test_pins.py."""

from __future__ import annotations

VLLM_RELEASE = "0.33.0"
GPU_IMAGE = "vllm/vllm-openai"  # CUDA, linux/amd64 and arm64
CPU_IMAGE = "vllm/vllm-openai-cpu"  # the CPU backend, x86_64 and arm64 (one multi-arch tag)


def vllm_image(release: str = VLLM_RELEASE, *, cpu: bool = False) -> str:
    """``vllm/vllm-openai:v0.33.0`` (``vllm/vllm-openai-cpu:v0.33.0`` for the CPU backend)."""
    return f"{CPU_IMAGE if cpu else GPU_IMAGE}:v{release}"
