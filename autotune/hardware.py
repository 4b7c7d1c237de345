"""Hardware fingerprint: the GPUs vLLM will run on, from NVML or given explicitly."""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

from autotune import gpu_dir
from autotune.errors import UserError
from autotune.gpu_dir import ENV_FAKE_GPU_DIR

Backend = Literal["gpu", "cpu"]  # the vLLM backend an engine runs on
Device = Literal["auto", "gpu", "cpu"]  # --device: "auto" asks the vLLM to launch

ENV_GPU = "AUTOTUNE_GPU"
_GPU_SPEC = re.compile(
    r"^(?P<name>.+):(?P<mem>[0-9]{1,30}(?:\.[0-9]{1,30})?)(?:x(?P<count>[0-9]{1,30}))?$"
)
MAX_GPU_MEMORY_GIB = 4096  # per GPU, --gpu NAME:MEMORY_GIB
MAX_GPU_COUNT = 1024
_MAX_GPU_NAME = 100


@dataclass(frozen=True)
class Hardware:
    """What a profile is keyed by: GPU model, memory per GPU, count and driver."""

    gpu_name: str  # the CPU model on the CPU backend
    memory_gib: float
    count: int = 1
    driver: str | None = None
    source: str = "nvml"  # "nvml", "flag", "env" or "cpu"
    device: Backend = "gpu"  # vLLM's CUDA backend, or its CPU backend
    cores: int | None = None

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def key(self) -> str:
        """Stable slug such as ``nvidia-h100-80gb-hbm3-80gib-x1`` or ``cpu-amd-epyc-2c-24gib``."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        if self.is_cpu:
            return f"cpu-{slug}-{self.cores}c-{round(self.memory_gib)}gib"
        return f"{slug}-{round(self.memory_gib)}gib-x{self.count}"

    @property
    def total_memory_gib(self) -> float:
        return self.memory_gib * self.count

    def describe(self) -> str:
        if self.is_cpu:
            return (
                f"CPU backend: {self.gpu_name}, {self.cores} cores, {self.memory_gib:.1f} GiB "
                "memory (KV cache sized in bytes, no GPU)"
            )
        where = {"nvml": "detected by NVML", "flag": "given by --gpu", "env": f"given by {ENV_GPU}"}
        driver = f", driver {self.driver}" if self.driver else ""
        return (
            f"{self.count} x {self.gpu_name} ({self.memory_gib:.1f} GiB){driver}, "
            f"{where.get(self.source, self.source)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu_name,
            "memory_gib": round(self.memory_gib, 2),
            "count": self.count,
            "driver": self.driver,
            "source": self.source,
            "device": self.device,
            "cores": self.cores,
            "key": self.key,
        }


def parse_gpu_spec(spec: str, *, source: str) -> Hardware:
    """Parse ``NAME:MEMORY_GIB[xCOUNT]``, e.g. ``H100-80GB:80`` or ``L4:24x2``."""
    m = _GPU_SPEC.match(spec.strip())
    shown = repr(spec) if len(spec) <= 60 else repr(spec[:60]) + "..."
    if not m or not m["name"].strip() or not m["name"].isprintable():
        raise UserError(
            f"invalid GPU spec {shown}: expected NAME:MEMORY_GIB[xCOUNT], e.g. H100:80 or L4:24x2"
        )
    memory = float(m["mem"])
    count = int(m["count"] or 1)
    if not 0 < memory <= MAX_GPU_MEMORY_GIB or not 1 <= count <= MAX_GPU_COUNT:
        raise UserError(
            f"invalid GPU spec {shown}: memory must be above 0 and at most {MAX_GPU_MEMORY_GIB} "
            f"GiB, the count 1..{MAX_GPU_COUNT}"
        )
    if len(m["name"].strip()) > _MAX_GPU_NAME:
        raise UserError(f"invalid GPU spec {shown}: the name is over {_MAX_GPU_NAME} characters")
    return Hardware(gpu_name=m["name"].strip(), memory_gib=memory, count=count, source=source)


def engine_hardware(hardware: Hardware, *, sizes: Mapping[str, int]) -> Hardware:
    """What one engine runs on, and what its profile and study are keyed by: tensor × pipeline
    parallel GPUs (``sizes``; 1 each when not given) of the machine's kind, however many GPUs
    the machine has. The CPU backend is the machine."""
    if hardware.is_cpu:
        return hardware
    group = sizes.get("tensor_parallel_size", 1) * sizes.get("pipeline_parallel_size", 1)
    return replace(hardware, count=max(1, group))


def _nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None when there is no usable NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def detect_nvml() -> Hardware | None:
    """Fingerprint the GPUs the engines will use through NVML (those CUDA_VISIBLE_DEVICES
    names, else all); None when NVML finds no GPU."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        try:
            handles = _handles(nvml, visible_devices())  # the GPUs the engines will see
        except Exception:  # CUDA_VISIBLE_DEVICES names a GPU NVML does not have
            return None
        if not handles:
            return None
        handle, count = handles[0], len(handles)
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        total = nvml.nvmlDeviceGetMemoryInfo(handle).total
        driver = nvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        return Hardware(
            gpu_name=name, memory_gib=total / 2**30, count=count, driver=driver, source="nvml"
        )
    finally:
        nvml.nvmlShutdown()


def detect_cpu() -> Hardware:
    """Fingerprint of this machine for vLLM's CPU backend: CPU model, cores, memory."""
    import psutil

    model = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or platform.machine() or "cpu"
    return Hardware(
        gpu_name=model,
        memory_gib=psutil.virtual_memory().total / 2**30,
        count=1,
        source="cpu",
        device="cpu",
        cores=os.cpu_count() or 1,
    )


def choose_device(*, device: str, gpu: str | None, engine_version: str | None) -> Backend:
    """``--device auto``: a CPU build of vLLM (version ``...+cpu``) means the CPU backend, unless
    a GPU was given explicitly."""
    if device not in get_args(Device):
        raise UserError(f"--device {device}: choose one of {', '.join(get_args(Device))}")
    if device != "auto":
        return cast(Backend, device)
    if gpu or os.environ.get(ENV_GPU):
        return "gpu"
    return "cpu" if engine_version and engine_version.endswith("+cpu") else "gpu"


def resolve_hardware(*, gpu: str | None = None, device: Backend = "gpu") -> Hardware:
    """``--device cpu`` → this CPU; else ``--gpu``, then ``AUTOTUNE_GPU``, then NVML; with none
    of them it is an error."""
    if device == "cpu":
        if gpu:
            raise UserError("--gpu and --device cpu contradict each other; give one of them")
        return detect_cpu()
    if gpu:
        return parse_gpu_spec(gpu, source="flag")
    if os.environ.get(ENV_GPU):
        return parse_gpu_spec(os.environ[ENV_GPU], source="env")
    detected = detect_nvml()
    if detected is None:
        raise UserError(
            "no GPU found by NVML: give the hardware with --gpu NAME:MEMORY_GIB[xCOUNT] "
            f"(or {ENV_GPU}), e.g. --gpu H100:80, or use --device cpu with a CPU build of vLLM"
        )
    return detected


ENV_RELEASE_TIMEOUT = "AUTOTUNE_GPU_RELEASE_TIMEOUT_S"


def visible_devices(env: Mapping[str, str] | None = None) -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` names (indices in PCI bus order, or UUIDs); None
    when it is unset (every GPU)."""
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [d.strip() for d in raw.split(",") if d.strip()]


def _handles(nvml: Any, devices: Sequence[str] | None) -> list[Any]:
    if devices is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    return [
        nvml.nvmlDeviceGetHandleByIndex(int(d)) if d.isdigit()
        else nvml.nvmlDeviceGetHandleByUUID(d)
        for d in devices
    ]  # fmt: skip


def device_count() -> int | None:
    """GPUs on this machine (NVML, or the simulated ones); None without either."""
    fake = os.environ.get(ENV_FAKE_GPU_DIR)
    if fake:
        return gpu_dir.count(Path(fake))
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return int(nvml.nvmlDeviceGetCount())
    finally:
        nvml.nvmlShutdown()


def gpu_memory_used_bytes(devices: Sequence[str] | None = None) -> int | None:
    """Memory in use on the given GPUs (default: every GPU) according to NVML, or None
    without NVML. NVML ignores CUDA_VISIBLE_DEVICES: the devices are named here."""
    fake = os.environ.get(ENV_FAKE_GPU_DIR)
    if fake:
        return gpu_dir.used_bytes(Path(fake), devices)
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return sum(int(nvml.nvmlDeviceGetMemoryInfo(h).used) for h in _handles(nvml, devices))
    except Exception:  # a device that vanished or a UUID NVML does not know
        return None
    finally:
        nvml.nvmlShutdown()


def release_timeout_s(default: float = 60.0) -> float:
    raw = os.environ.get(ENV_RELEASE_TIMEOUT, "").strip()
    return float(raw) if raw else default


def wait_memory_released(
    *,
    baseline_bytes: int | None,
    timeout_s: float = 60.0,
    slack_bytes: int = 512 * 2**20,
    devices: Sequence[str] | None = None,
) -> bool:
    """Wait until the GPUs' memory falls back to ``baseline_bytes`` (+ slack); True when it did.

    Without NVML (or no baseline) there is nothing to wait for and it returns True at once.
    """
    if baseline_bytes is None:
        return True
    deadline = time.monotonic() + timeout_s
    while True:
        used = gpu_memory_used_bytes(devices)
        if used is None or used <= baseline_bytes + slack_bytes:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)
