"""Outcome of a trial: classify an engine's exit from its exit code and log (vllm-facts §1).

Pure and unit-tested against vLLM's verbatim texts. Classification uses the *first* root cause
in the log, not the "Engine core initialization failed" wrapper that follows it.
"""

from __future__ import annotations

import dataclasses
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Outcome(str, Enum):
    """What happened to one trial."""

    OK = "ok"
    OOM_WEIGHTS = "oom_weights"  # OOM while loading weights
    OOM_PROFILING = "oom_profiling"  # OOM in the dummy forward / encoder profile
    OOM_CUDA_GRAPHS = "oom_cuda_graphs"  # OOM while estimating or capturing CUDA graphs
    OOM_STARTUP = "oom_startup"  # OOM at startup, phase unknown
    KV_TOO_SMALL = "kv_too_small"  # KV cache cannot hold one max_model_len request
    NO_KV_CACHE = "no_kv_cache"  # no memory left for the KV cache at all
    FREE_MEMORY = "insufficient_free_memory"  # free memory below the requested utilization
    CRASH_UNDER_LOAD = "crash_under_load"  # engine died (or OOMed) during the benchmark
    REQUEST_ERRORS = "request_errors"  # engine alive, but many benchmark requests failed
    IMAGE_LIMIT = "image_limit_exceeded"  # vLLM refused prompts with more images than the limit
    STARTUP_TIMEOUT = "startup_timeout"
    STARTUP_CRASH = "startup_crash"  # exited during startup for another reason
    INVALID_CONFIG = "invalid_config"  # argparse / pydantic / ValueError on the arguments
    MODEL_NOT_FOUND = "model_not_found"
    PORT_IN_USE = "port_in_use"
    HARNESS_ERROR = "harness_error"  # autotune's own fault; the configuration is not to blame
    SKIPPED = "skipped"  # predicted to fail from earlier failures; not launched
    PRUNED = "pruned"  # stopped mid-benchmark by the pruner: clearly worse than the median
    HUNG = "hung"  # alive but no token for the stall timeout (a stopped or wedged engine)
    KILLED = "killed"  # died by a signal autotune did not send, no OOM text in its log

    @property
    def infeasible(self) -> bool:
        """The configuration cannot serve: told to Optuna as COMPLETE with a violated constraint."""
        return self in _INFEASIBLE

    @property
    def is_oom(self) -> bool:
        return self.value.startswith("oom_")


_INFEASIBLE = {
    Outcome.OOM_WEIGHTS,
    Outcome.OOM_PROFILING,
    Outcome.OOM_CUDA_GRAPHS,
    Outcome.OOM_STARTUP,
    Outcome.KV_TOO_SMALL,
    Outcome.NO_KV_CACHE,
    Outcome.FREE_MEMORY,
    Outcome.CRASH_UNDER_LOAD,
    Outcome.REQUEST_ERRORS,
    Outcome.IMAGE_LIMIT,
    Outcome.SKIPPED,
    Outcome.STARTUP_TIMEOUT,
    Outcome.STARTUP_CRASH,
}


@dataclass(frozen=True)
class Classified:
    """An outcome with the evidence behind it."""

    outcome: Outcome
    reason: str  # the log line that decided it, shortened
    estimated_max_model_len: int | None = None


_OOM = re.compile(
    r"(?:torch\.(?:cuda\.)?)?OutOfMemoryError: CUDA out of memory|CUDA error: out of memory|"
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDA out of memory occurred when warming up sampler"
)
_KV_TOO_SMALL = re.compile(
    r"To serve at least one request with the models?'s? max seq len \((?P<max_len>\d+)\), "
    r"\((?P<need>[\d.]+) Gi?B KV cache is needed, which is larger than the available KV cache "
    r"memory \((?P<avail>[\d.]+) Gi?B\)\.(?:\s*Based on the available memory, the estimated "
    r"maximum model length is (?P<est>\d+)\.)?"
)
_CANNOT_AUTOFIT = re.compile(r"Cannot auto-fit max_model_len")
_NO_KV = re.compile(r"No available memory for the cache blocks\.|leaving none for the KV cache")
_FREE_MEMORY = re.compile(
    r"Free memory on device[^(]*\([\d.]+/[\d.]+ GiB\) on startup is less than desired GPU memory"
    r"|Available memory on node \d+ .* is less than desired CPU memory utilization"
)
_PORT = re.compile(r"\[Errno 98\] (?:error while attempting to bind.*: )?[Aa]ddress already in use")
_NOT_FOUND = re.compile(
    r"HFValidationError: Repo id must be|LocalEntryNotFoundError|RepositoryNotFoundError|"
    r"GatedRepoError|is not a local folder and is not a valid model identifier|"
    r"No such file or directory: .*config\.json|OSError: .* does not appear to have a file named"
)
_INVALID = re.compile(
    r"\berror: (?:unrecognized arguments|argument [^:]+:)|ValidationError: \d+ validation errors? "
    r"for \w+|max_num_batched_tokens \(\d+\) must be greater than or equal to max_num_seqs|"
    r"User-specified max_model_len \(\d+\) is greater than the derived max_model_len|"
    r"is smaller than max_model_len|World size \(\d+\) is larger than the number of available"
)
_TIMEOUT = re.compile(r"Timed out waiting for engine core processes to start")

# Phase markers (vllm-facts §1.3) to place an OOM.
_LOADED = re.compile(r"Model loading took|Loading weights took")
_KV_AVAILABLE = re.compile(r"Available KV cache memory")
_GRAPHS = re.compile(
    r"Profiling CUDA graph memory|Estimated CUDA graph memory|KV cache size: [\d,]+ tokens|"
    r"Capturing CUDA graphs|warming up sampler"
)


# vLLM's log prefix, "(EngineCore pid=1) ERROR 11-21 10:00:00 [core.py:1081] ", is noise in reasons.
_PREFIX = re.compile(r"^\(\w+ pid=\d+\)\s+(?:\w+ \d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\] )?")


def _line_of(log: str, match: re.Match[str], *, following: int = 0) -> str:
    """The log line holding ``match`` (plus ``following`` lines, e.g. pydantic's field names)."""
    start = log.rfind("\n", 0, match.start()) + 1
    lines = [
        _PREFIX.sub("", ln).strip()
        for ln in log[start:].splitlines()[: following + 1]
        if ln.strip()
    ]
    line = " | ".join(lines)
    return line if len(line) <= 400 else line[:397] + "..."


def _oom_phase(log: str, at: int) -> Outcome:
    before = log[:at]
    if not _LOADED.search(before):
        return Outcome.OOM_WEIGHTS
    if _GRAPHS.search(before):
        return Outcome.OOM_CUDA_GRAPHS
    if not _KV_AVAILABLE.search(before):
        return Outcome.OOM_PROFILING
    return Outcome.OOM_STARTUP


def killed_by(returncode: int | None) -> str | None:
    """The signal's name when the engine died by one (a negative exit code; a shell's
    ``128 + N`` is not trusted), else None. Only called before autotune stops the engine, so
    the signal came from outside (an operator, another program, the kernel's OOM killer)."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _killed(log: str, returncode: int | None) -> Classified | None:
    name = killed_by(returncode)
    if name is None or _OOM.search(log):
        return None
    return Classified(Outcome.KILLED, f"engine killed by {name} (not sent by autotune)")


def classify_startup(log: str, *, returncode: int | None) -> Classified:
    """Classify an engine that exited before it became ready."""
    found: list[tuple[int, Classified]] = []
    if m := _KV_TOO_SMALL.search(log):
        est = int(m["est"]) if m["est"] else 0
        found.append((m.start(), Classified(Outcome.KV_TOO_SMALL, _line_of(log, m), est)))
    if m := _CANNOT_AUTOFIT.search(log):
        found.append((m.start(), Classified(Outcome.KV_TOO_SMALL, _line_of(log, m), 0)))
    for pattern, outcome in (
        (_NO_KV, Outcome.NO_KV_CACHE),
        (_FREE_MEMORY, Outcome.FREE_MEMORY),
        (_PORT, Outcome.PORT_IN_USE),
        (_NOT_FOUND, Outcome.MODEL_NOT_FOUND),
        (_INVALID, Outcome.INVALID_CONFIG),
        (_TIMEOUT, Outcome.STARTUP_TIMEOUT),
    ):
        if m := pattern.search(log):
            following = 2 if outcome is Outcome.INVALID_CONFIG else 0
            found.append((m.start(), Classified(outcome, _line_of(log, m, following=following))))
    if m := _OOM.search(log):
        found.append((m.start(), Classified(_oom_phase(log, m.start()), _line_of(log, m))))
    if found:
        return min(found, key=lambda item: item[0])[1]
    if (killed := _killed(log, returncode)) is not None:
        return killed
    tail = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    reason = tail[-1][:300] if tail else f"exit code {returncode}"
    return Classified(Outcome.STARTUP_CRASH, reason)


def classify_runtime(log: str, *, returncode: int | None = None) -> Classified:
    """Classify an engine that died while serving the benchmark (killed from outside: its own
    class, never a memory failure)."""
    if (killed := _killed(log, returncode)) is not None:
        return killed
    if m := _OOM.search(log):
        return Classified(Outcome.CRASH_UNDER_LOAD, "OOM under load: " + _line_of(log, m))
    tail = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    return Classified(Outcome.CRASH_UNDER_LOAD, tail[-1][:300] if tail else "engine exited")


@dataclass(frozen=True)
class StartupInfo:
    """vLLM's own numbers from a successful (or partial) startup log (vllm-facts §1.3). The memory
    breakdown (printed last, so only by a boot that got through graph capture) splits non-KV
    memory: consumed (weights + non-torch), peak activation and CUDA graphs."""

    kv_cache_gib: float | None = None  # "Available KV cache memory" (CPU: "... set (X/Y) GiB")
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    concurrency_len: int | None = None
    weights_gib: float | None = None
    profiled_images: int | None = None  # dummy images of the encoder profile
    vllm_version: str | None = None
    utilization: float | None = None  # the breakdown's "Desired GPU memory utilization"
    free_gib: float | None = None  # free device memory at the startup snapshot
    total_gib: float | None = None
    consumed_gib: float | None = None  # weights + non-torch (0.11: weight + non-torch summed)
    non_torch_gib: float | None = None  # 0.11 only
    peak_activation_gib: float | None = None
    cuda_graph_gib: float | None = None  # the breakdown, else "Estimated CUDA graph memory"
    cuda_graph_actual_gib: float | None = None  # the captured pool ("... GiB (actual)")
    block_size: int | None = None  # "Setting kv cache block size to N"
    kv_cache_bytes: int | None = None  # exact, from the breakdown's "--kv-cache-memory=N"

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StartupInfo:
        """The inverse of ``to_dict``; unknown keys and values of the wrong type are dropped."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = d.get(f.name)
            if value is None or isinstance(value, bool):
                continue
            if f.name == "vllm_version":
                values[f.name] = str(value)
            elif isinstance(value, (int, float)):
                whole = f.type in ("int | None", int)
                values[f.name] = int(value) if whole else float(value)
        return cls(**values)


_KV_GIB = re.compile(
    r"Available KV cache memory: (-?[\d.]+) GiB|(?:Explicitly|Auto) set \(([\d.]+)/[\d.]+\) GiB "
    r"for KV cache"
)
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) GiB")
_ENCODER = re.compile(
    r"Encoder cache will be initialized with a budget of (\d+) tokens, and profiled with "
    r"(\d+) image items"
)
_VERSION = re.compile(r"vLLM API server version (\S+)|Starting vLLM API server.*version (\S+)")
_FREE_AT_START = re.compile(r"Free memory on device[^(]*\(([\d.]+)/([\d.]+) GiB\) on startup")
_DESIRED = re.compile(r"Desired GPU memory utilization is \(([\d.]+), [\d.]+ GiB\)")
_USAGE = re.compile(  # 0.33: consumed, peak, graphs; 0.11 (DEBUG): weight, peak, non-torch, graphs
    r"Actual usage is ([\d.]+) GiB for (?:consumed memory \(weights \+ non-torch\)|(weight)), "
    r"([\d.]+) GiB for peak activation, (?:([\d.]+) GiB for non-torch memory, )?and ([\d.]+) GiB "
    r"for CUDAGraph memory"
)
_GRAPH_ESTIMATE = re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB total")
_GRAPH_POOL = re.compile(r"CUDA graph pool memory: ([\d.]+) GiB \(actual\)")
_BLOCK_SIZE = re.compile(r"Setting kv cache block size to (\d+)")
_KV_BYTES = re.compile(r"Replace gpu_memory_utilization config with `--kv-cache-memory=(\d+)`")


def _num(pattern: re.Pattern[str], log: str, group: int = 1) -> float | None:
    m = pattern.search(log)
    return float(m[group].replace(",", "")) if m and m[group] is not None else None


def parse_startup(log: str) -> StartupInfo:
    """Capacity and memory numbers vLLM prints at startup (0.11 two-line and 0.33 one-line
    forms; the CPU backend's KV line)."""
    kv, conc, version = _KV_GIB.search(log), _CONCURRENCY.search(log), _VERSION.search(log)
    tokens, images, block = _num(_KV_TOKENS, log), _num(_ENCODER, log, 2), _num(_BLOCK_SIZE, log)
    kv_bytes = _num(_KV_BYTES, log)
    usage = _USAGE.search(log)
    non_torch = float(usage[4]) if usage and usage[4] is not None else None
    consumed = float(usage[1]) + (non_torch or 0.0) if usage else None
    return StartupInfo(
        profiled_images=int(images) if images is not None else None,
        kv_cache_gib=float(kv[1] or kv[2]) if kv else None,
        kv_cache_tokens=int(tokens) if tokens is not None else None,
        max_concurrency=float(conc[2]) if conc else None,
        concurrency_len=int(conc[1].replace(",", "")) if conc else None,
        weights_gib=_num(_WEIGHTS, log) or (float(usage[1]) if usage and usage[2] else None),
        vllm_version=(version[1] or version[2]) if version else None,
        utilization=_num(_DESIRED, log),
        free_gib=_num(_FREE_AT_START, log),
        total_gib=_num(_FREE_AT_START, log, 2),
        consumed_gib=round(consumed, 4) if consumed is not None else None,
        non_torch_gib=non_torch,
        peak_activation_gib=float(usage[3]) if usage else None,
        cuda_graph_gib=float(usage[5]) if usage else _num(_GRAPH_ESTIMATE, log),
        cuda_graph_actual_gib=_num(_GRAPH_POOL, log),
        block_size=int(block) if block is not None else None,
        kv_cache_bytes=int(kv_bytes) if kv_bytes is not None else None,
    )
