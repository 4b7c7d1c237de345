"""What a running engine shows besides its answers: ``/metrics`` counters and GPU memory (NVML).

Both are best effort: a probe that cannot read returns ``None``, never fails a trial.
"""

from __future__ import annotations

import re
import threading
from types import TracebackType

import httpx

from autotune.hardware import gpu_memory_used_bytes
from autotune.units import GIB

_PREEMPTIONS = re.compile(r"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([\d.eE+-]+)", re.M)


def preemptions(base_url: str) -> int | None:
    """``vllm:num_preemptions_total`` summed over engines, or None when ``/metrics`` is unread."""
    try:
        text = httpx.get(base_url.rstrip("/") + "/metrics", timeout=5.0, trust_env=False).text
    except httpx.HTTPError:
        return None
    found = _PREEMPTIONS.findall(text)
    return int(sum(float(v) for v in found)) if found else None


class PeakMemory:
    """Samples the GPU memory in use (NVML) while it is entered; ``peak_gib`` is None without
    NVML (no NVIDIA driver, or the fake engine)."""

    def __init__(self, *, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_gib(self) -> float | None:
        return None if self.peak_bytes is None else round(self.peak_bytes / GIB, 2)

    @property
    def source(self) -> str:
        return "NVML" if self.peak_bytes is not None else "unavailable (no NVML)"

    def _sample(self) -> bool:
        used = gpu_memory_used_bytes()
        if used is None:
            return False
        self.peak_bytes = max(self.peak_bytes or 0, used)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._sample():
            pass

    def __enter__(self) -> PeakMemory:
        if self._sample():  # no NVML: no thread
            self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
