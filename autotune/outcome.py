"""Outcome of a trial: classify an engine's exit from its exit code and log (vllm-facts §1).

Pure and unit-tested against vLLM's verbatim texts. Classification uses the *first* root cause
in the log, not the "Engine core initialization failed" wrapper that follows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


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
    tail = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    reason = tail[-1][:300] if tail else f"exit code {returncode}"
    return Classified(Outcome.STARTUP_CRASH, reason)


def classify_runtime(log: str) -> Classified:
    """Classify an engine that died while serving the benchmark."""
    if m := _OOM.search(log):
        return Classified(Outcome.CRASH_UNDER_LOAD, "OOM under load: " + _line_of(log, m))
    tail = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
    return Classified(Outcome.CRASH_UNDER_LOAD, tail[-1][:300] if tail else "engine exited")


@dataclass(frozen=True)
class StartupInfo:
    """vLLM's own numbers from a successful (or partial) startup log."""

    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    concurrency_len: int | None = None
    weights_gib: float | None = None
    profiled_images: int | None = None  # dummy images of the encoder profile
    vllm_version: str | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_KV_GIB = re.compile(r"Available KV cache memory: (-?[\d.]+) GiB")
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) GiB")
_ENCODER = re.compile(
    r"Encoder cache will be initialized with a budget of (\d+) tokens, and profiled with "
    r"(\d+) image items"
)
_VERSION = re.compile(r"vLLM API server version (\S+)|Starting vLLM API server.*version (\S+)")


def parse_startup(log: str) -> StartupInfo:
    """Capacity numbers vLLM prints at startup (0.11 two-line and 0.33 one-line forms)."""
    kv = _KV_GIB.search(log)
    tokens = _KV_TOKENS.search(log)
    conc = _CONCURRENCY.search(log)
    weights = _WEIGHTS.search(log)
    version = _VERSION.search(log)
    encoder = _ENCODER.search(log)
    return StartupInfo(
        profiled_images=int(encoder[2]) if encoder else None,
        kv_cache_gib=float(kv[1]) if kv else None,
        kv_cache_tokens=int(tokens[1].replace(",", "")) if tokens else None,
        max_concurrency=float(conc[2]) if conc else None,
        concurrency_len=int(conc[1].replace(",", "")) if conc else None,
        weights_gib=float(weights[1]) if weights else None,
        vllm_version=(version[1] or version[2]) if version else None,
    )
