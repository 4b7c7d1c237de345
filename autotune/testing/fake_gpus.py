"""Simulated GPUs for the fake engine: a directory stands for NVML, so several workers and
``--gpus`` can be tested without a GPU. A test double, not a driver.

``AUTOTUNE_FAKE_GPU_DIR=DIR`` holds one sub-directory per device (``0``, ``1``, ...). A fake
engine takes the first device ``CUDA_VISIBLE_DEVICES`` names (default ``0``), counts the memory
other live engines hold there as used, and while it runs writes ``DIR/<device>/<pid>`` with the
bytes it holds. autotune's memory check reads the same files (``hardware.gpu_memory_used_bytes``).
A file whose process is gone no longer counts (the driver freed it), unless its name ends in
``.leak`` (``AUTOTUNE_FAKE_GPU_LEAK=1``: memory a dead engine never gives back).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

GIB = 1024**3


def create(directory: Path, count: int) -> Path:
    """A directory standing for ``count`` idle GPUs."""
    for i in range(count):
        (directory / str(i)).mkdir(parents=True, exist_ok=True)
    return directory


def count(directory: Path) -> int:
    return sum(1 for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie holds no memory
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _held(device: Path, *, skip: int | None = None) -> int:
    total = 0
    for entry in device.glob("*"):
        pid_text = entry.name.removesuffix(".leak")
        if not pid_text.isdigit() or int(pid_text) == skip:
            continue
        if entry.name.endswith(".leak") or _alive(int(pid_text)):
            with contextlib.suppress(OSError, ValueError):
                total += int(entry.read_text() or 0)
    return total


def used_bytes(directory: Path, devices: Sequence[str] | None) -> int:
    names = list(devices) if devices is not None else [str(i) for i in range(count(directory))]
    return sum(_held(directory / name) for name in names)


def device_of(env: Mapping[str, str]) -> str:
    visible = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")
    return visible[0].strip() or "0"


def others_gib(env: Mapping[str, str]) -> float:
    """Memory other live engines hold on this engine's device (0 without the directory)."""
    directory = env.get("AUTOTUNE_FAKE_GPU_DIR")
    if not directory:
        return 0.0
    return _held(Path(directory) / device_of(env), skip=os.getpid()) / GIB


def hold(env: Mapping[str, str], gib: float) -> Path | None:
    """Record this engine's memory on its device; returns the file (removed by ``free``)."""
    directory = env.get("AUTOTUNE_FAKE_GPU_DIR")
    if not directory:
        return None
    leak = env.get("AUTOTUNE_FAKE_GPU_LEAK") == "1"
    path = Path(directory) / device_of(env) / f"{os.getpid()}{'.leak' if leak else ''}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(int(gib * GIB)))
    return path


def free(path: Path | None) -> None:
    if path is not None and not path.name.endswith(".leak"):
        path.unlink(missing_ok=True)
