"""Simulated GPUs for the fake engine: a directory stands for NVML, so several workers and
``--gpus`` can be tested without a GPU. A test double, not a driver.

``AUTOTUNE_FAKE_GPU_DIR=DIR`` holds one sub-directory per device (``0``, ``1``, ...). A fake
engine takes the first ``--tensor-parallel-size`` devices ``CUDA_VISIBLE_DEVICES`` names (default
``0``; fewer than that is vLLM's error), counts the memory other live engines hold on the first
as used, and while it runs writes ``DIR/<device>/<pid>`` on each with the bytes it holds there.
autotune reads the same files (``autotune.gpu_dir``, the reading side). A file whose
process is gone no longer counts (the driver freed it), unless its name ends in ``.leak``
(``AUTOTUNE_FAKE_GPU_LEAK=1``: memory a dead engine never gives back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from autotune.gpu_dir import count, held, used_bytes
from autotune.units import GIB

__all__ = ["count", "create", "free", "hold", "others_gib", "too_few", "used_bytes"]


def create(directory: Path, count: int) -> Path:
    """A directory standing for ``count`` idle GPUs."""
    for i in range(count):
        (directory / str(i)).mkdir(parents=True, exist_ok=True)
    return directory


def devices_of(env: Mapping[str, str]) -> list[str]:
    """The devices ``CUDA_VISIBLE_DEVICES`` names (default ``0``), in order."""
    visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "0").split(",") if d.strip()]
    return visible or ["0"]


def device_of(env: Mapping[str, str]) -> str:
    return devices_of(env)[0]


def too_few(env: Mapping[str, str], tp: int) -> str | None:
    """vLLM's error when tensor parallelism needs more GPUs than the engine sees (only with
    simulated GPUs: without the directory the fake does not count devices)."""
    if not env.get("AUTOTUNE_FAKE_GPU_DIR") or tp <= len(devices_of(env)):
        return None
    return (
        f"ValueError: World size ({tp}) is larger than the number of available GPUs "
        f"({len(devices_of(env))}) in this node."
    )


def others_gib(env: Mapping[str, str]) -> float:
    """Memory other live engines hold on this engine's device (0 without the directory)."""
    directory = env.get("AUTOTUNE_FAKE_GPU_DIR")
    if not directory:
        return 0.0
    return held(Path(directory) / device_of(env), skip=os.getpid()) / GIB


def hold(env: Mapping[str, str], gib: float, *, devices: int = 1) -> list[Path]:
    """Record this engine's memory on each device it uses (the first ``devices`` it sees, one
    per tensor-parallel rank); returns the files (removed by ``free``)."""
    directory = env.get("AUTOTUNE_FAKE_GPU_DIR")
    if not directory:
        return []
    leak = env.get("AUTOTUNE_FAKE_GPU_LEAK") == "1"
    held = []
    for device in devices_of(env)[: max(1, devices)]:
        path = Path(directory) / device / f"{os.getpid()}{'.leak' if leak else ''}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(int(gib * GIB)))
        held.append(path)
    return held


def free(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.name.endswith(".leak"):
            path.unlink(missing_ok=True)
