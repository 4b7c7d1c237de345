"""Simulated GPUs, the reading side: with ``AUTOTUNE_FAKE_GPU_DIR=DIR`` a directory stands for
NVML, so several workers and ``--gpus`` run without a GPU (tests, benchmarks, demos).

``DIR`` holds one sub-directory per device (``0``, ``1``, ...); an engine writes
``DIR/<device>/<pid>`` with the bytes it holds there. A file whose process is gone no longer counts
(the driver freed it), unless its name ends in ``.leak`` (memory a dead engine never gave back).
The writing side is the fake engine's (``autotune.testing.fake_gpus``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

ENV_FAKE_GPU_DIR = "AUTOTUNE_FAKE_GPU_DIR"


def count(directory: Path) -> int:
    """Simulated devices in ``directory``."""
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


def held(device: Path, *, skip: int | None = None) -> int:
    """Bytes live engines (and leaks) hold on one simulated device, ``skip`` a pid not counted."""
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
    """Bytes in use on the named devices (default: all)."""
    names = list(devices) if devices is not None else [str(i) for i in range(count(directory))]
    return sum(held(directory / name) for name in names)
