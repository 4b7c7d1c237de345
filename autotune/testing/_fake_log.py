"""The fake engine's console output: vLLM-style log lines, tracebacks and fatal error texts."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence

VERSION = "0.33.0+fake"
ENGINE_DEAD = (
    "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. "
    "See stack trace (above) for the root cause."
)
CORE_FAILED = (
    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)
_RUNNER = "v1/worker/gpu_model_runner.py"
_FRAMES = {  # phase -> innermost frame (file, function)
    "init_device": ("v1/worker/utils.py", "request_memory"),
    "load_model": (_RUNNER, "load_model"),
    "profile_run": (_RUNNER, "profile_run"),
    "profile_cudagraph_memory": (_RUNNER, "profile_cudagraph_memory"),
    "_initialize_kv_caches": ("v1/core/kv_cache_planning.py", "_check_enough_kv_cache_memory"),
    "initialize_kv_cache": (_RUNNER, "initialize_kv_cache"),
    "capture_model": (_RUNNER, "capture_model"),
    "step": (_RUNNER, "execute_model"),
}


class Out:
    """Writes log lines in vLLM's format; one lock keeps concurrent lines whole."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.api = f"APIServer pid={os.getpid()}"
        self.engine = self.api

    def raw(self, proc: str, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        with self.lock:
            try:
                stream.write("".join(f"({proc}) {line}\n" for line in text.splitlines()))
                stream.flush()
            except (OSError, ValueError):
                pass

    def log(self, proc: str, level: str, src: str, msg: str) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        lines = "\n".join(f"{level} {stamp} [{src}] {line}" for line in msg.splitlines())
        self.raw(proc, lines, err=level == "ERROR")

    def traceback(self, where: str, exc: str, inner: Sequence[tuple[str, str]] = ()) -> str:
        """A Python-style traceback through the engine core down to the failing phase.

        ``inner``: (file, function) frames below the phase's own, innermost last.
        """
        outer = (
            ("run_busy_loop", "step") if where == "step" else ("__init__", "_initialize_kv_caches")
        )
        frames = [
            ("v1/engine/core.py", "run_engine_core"),
            *(("v1/engine/core.py", f) for f in outer),
        ]
        frames += [_FRAMES.get(where, ("v1/engine/core.py", where)), *inner]
        body = "".join(f'  File "/fake/vllm/{f}", line 312, in {fn}\n' for f, fn in frames)
        return f"Traceback (most recent call last):\n{body}{exc}"


def oom_text(tried: float, total: float, free: float, in_use: float) -> str:
    """PyTorch's caching-allocator OOM message (sizes in GiB)."""

    def size(gib: float) -> str:
        return f"{gib:.2f} GiB" if gib >= 1 else f"{gib * 1024:.2f} MiB"

    return (
        f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {size(tried)}. GPU 0 has "
        f"a total capacity of {total:.2f} GiB of which {size(max(free, 0.0))} is free. Including "
        f"non-PyTorch memory, this process has {size(in_use)} memory in use. Of the allocated "
        f"memory {size(max(in_use - 0.6, 0.0))} is allocated by PyTorch, and 20.00 MiB is reserved "
        "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
