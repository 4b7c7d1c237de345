"""Simulation behind the fake engine: model size, GPU memory phases and a continuous-batching loop.

Pure arithmetic and threads only; the process, log and HTTP side lives in ``fake_engine``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

GIB = 1024**3
CONTEXT_GIB = 0.5
DOCS = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"


_NO_KV = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
    "despite its name)."
)
_TRY = (
    "Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) "
    "or decreasing `max_model_len` when initializing the engine."
)


class ModelError(Exception):
    """The model cannot be resolved; the message is the final error line to print."""


@dataclass(frozen=True)
class FakeEnv:
    """Knobs read from ``AUTOTUNE_FAKE_*`` environment variables."""

    total: float = 24.0
    used: float = 0.0
    weights: float | None = None
    act_factor: float = 24.0
    startup_s: float = 1.0
    time_scale: float = 1.0
    load_oom_util: float | None = None
    crash_after: int | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> FakeEnv:
        def num(name: str) -> float | None:
            raw = env.get("AUTOTUNE_FAKE_" + name, "").strip()
            return float(raw) if raw else None

        def get(name: str, default: float) -> float:
            value = num(name)
            return default if value is None else value

        crash = num("CRASH_AFTER_REQUESTS")
        return cls(
            total=get("GPU_MEMORY_GIB", 24.0),
            used=get("GPU_USED_GIB", 0.0),
            weights=num("WEIGHTS_GIB"),
            act_factor=get("ACT_FACTOR", 24.0),
            startup_s=get("STARTUP_S", 1.0),
            time_scale=get("TIME_SCALE", 1.0),
            load_oom_util=num("LOAD_OOM_UTIL"),
            crash_after=None if crash is None else int(crash),
        )


@dataclass(frozen=True)
class ModelInfo:
    """The few ``config.json`` fields that size weights, activations and the KV cache."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool
    dtype: str
    max_len: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelInfo:
        text = cfg.get("text_config")
        t: Mapping[str, Any] = text if isinstance(text, dict) else cfg
        hidden = int(t.get("hidden_size", 4096))
        heads = int(t.get("num_attention_heads", 32))
        dtype = t.get("torch_dtype") or t.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype")
        return cls(
            layers=int(t.get("num_hidden_layers", 32)),
            heads=heads,
            kv_heads=int(t.get("num_key_value_heads") or heads),
            head_dim=int(t.get("head_dim") or hidden // heads),
            hidden=hidden,
            intermediate=int(t.get("intermediate_size", 4 * hidden)),
            vocab=int(t.get("vocab_size", 32000)),
            tied=bool(t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
            dtype=str(dtype or "bfloat16"),
            max_len=int(t.get("max_position_embeddings", 2048)),
        )

    def params(self) -> int:
        """Rough parameter count of a dense decoder."""
        h, d = self.hidden, self.head_dim
        per_layer = 2 * h * self.heads * d + 2 * h * self.kv_heads * d + 3 * h * self.intermediate
        return self.vocab * h * (1 if self.tied else 2) + self.layers * per_layer


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_model(model: str) -> ModelInfo:
    """Find ``config.json`` for a local directory or a cached hub id, like an offline server."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"OSError: {model} does not appear to have a file named config.json. "
                f"Checkout 'https://huggingface.co/{model}/tree/None' for available files."
            )
        return ModelInfo.from_config(json.loads((path / "config.json").read_text()))
    if model.startswith((".", "/", "~")) or model.count(os.sep) > 1 or path.exists():
        raise ModelError(
            "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' "
            f"or 'namespace/repo_name': '{model}'. Use `repo_type` argument if needed."
        )
    repo = _hub_cache() / ("models--" + model.replace("/", "--"))
    ref = repo / "refs" / "main"
    found = [repo / "snapshots" / ref.read_text().strip() / "config.json"] if ref.is_file() else []
    found += sorted(repo.glob("snapshots/*/config.json"))
    for config in found:
        if config.is_file():
            return ModelInfo.from_config(json.loads(config.read_text()))
    raise ModelError(
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached "
        "snapshot folder for the specified revision on the local disk and outgoing traffic has "
        "been disabled. To enable repo look-ups and downloads online, pass "
        "'local_files_only=False' as input."
    )


@dataclass(frozen=True)
class ServeConfig:
    """The resolved engine settings (after defaults and validation)."""

    util: float
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int  # -1: auto-fit to the KV cache
    block_size: int = 16
    enforce_eager: bool = False
    tp: int = 1
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    kv_cache_memory_bytes: int | None = None


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """CUDA graph capture sizes as ``vllm serve`` derives them (no speculative decoding)."""
    top = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = {s for s in [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)] if s <= top}
    sizes.update(s for s in (max_num_batched_tokens, max_num_seqs) if s <= top)
    return sorted(sizes)


def kv_bytes_per_token(cfg: ServeConfig, m: ModelInfo) -> int:
    """``2 × layers × kv_heads_per_gpu × head_dim × dtype_bytes``."""
    dtype_bytes = 4 if cfg.dtype in ("float32", "float") else 2
    kv_bytes = 1 if cfg.kv_cache_dtype.startswith("fp8") else dtype_bytes
    return 2 * m.layers * max(1, m.kv_heads // cfg.tp) * m.head_dim * kv_bytes


def weights_gib(cfg: ServeConfig, m: ModelInfo, env: FakeEnv) -> float:
    """Weight memory per GPU."""
    if env.weights is not None:
        return env.weights
    return m.params() * (4 if cfg.dtype in ("float32", "float") else 2) / GIB / cfg.tp


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


@dataclass
class Phase:
    """A slice of startup: its share of the startup time, engine log lines, and maybe an error."""

    share: float
    where: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (source, message)
    error: str | None = None  # final exception line, raised in EngineCore
    before_error: list[tuple[str, str]] = field(default_factory=list)  # ERROR log lines


@dataclass
class Boot:
    """The simulated startup: its phases and, if it succeeds, the KV cache it ends with."""

    phases: list[Phase]
    num_blocks: int = 0
    max_model_len: int = 0
    breakdown: str = ""


def plan_boot(cfg: ServeConfig, m: ModelInfo, env: FakeEnv) -> Boot:
    """Walk the startup phases of the memory model; stop at the first failure."""
    total, s = env.total, env.startup_s
    free = total - env.used - CONTEXT_GIB
    req = cfg.util * total
    boot = Boot([])

    def phase(share: float, where: str, *lines: tuple[str, str], error: str | None = None) -> Phase:
        boot.phases.append(Phase(share, where, list(lines), error))
        return boot.phases[-1]

    def oom(share: float, where: str, tried: float, left: float, *lines: tuple[str, str]) -> Boot:
        phase(share, where, *lines, error=oom_text(tried, total, left, free - left))
        return boot

    if free < req:
        msg = (
            f"ValueError: Free memory on device cuda:0 ({free:.2f}/{total:.2f} GiB) on startup is "
            f"less than desired GPU memory utilization ({cfg.util}, {req:.2f} GiB). Decrease GPU "
            "memory utilization or reduce GPU memory used by other processes."
        )
        phase(0.1, "init_device", error=msg)
        return boot
    phase(0.1, "init_device", ("gpu_model_runner.py:3389", "Starting to load model ..."))
    w = weights_gib(cfg, m, env)
    if w > free:
        layer = w / max(m.layers, 1)
        left = free - math.floor(free / layer) * layer
        oom(0.3, "load_model", layer, left)
        original = boot.phases[-1].error or ""
        boot.phases[-1].before_error.append(
            (
                "gpu_model_runner.py:3425",
                "Failed to load model - not enough GPU memory. Try lowering "
                "--gpu-memory-utilization to free memory for weights, increasing "
                "--tensor-parallel-size, or using --quantization. "
                f"(original error: {original.split(': ', 1)[1]})",
            )
        )
        return boot
    phase(
        0.3,
        "load_model",
        ("default_loader.py:322", f"Loading weights took {0.25 * s:.2f} seconds"),
        (
            "gpu_model_runner.py:3440",
            f"Model loading took {w:.4f} GiB memory and {0.3 * s:.6f} seconds",
        ),
    )
    act = cfg.max_num_batched_tokens * m.hidden * 2 * env.act_factor / GIB
    act += cfg.max_num_seqs * m.vocab * 4 * 2 / GIB
    compile_line = ("monitor.py:48", f"torch.compile took {0.2 * s:.2f} s in total")
    if w + act > free:
        return oom(0.25, "profile_run", act, free - w)
    phase(0.25, "profile_run", *([] if cfg.enforce_eager else [compile_line]))
    cg = 0.0
    if not cfg.enforce_eager:
        sizes = capture_sizes(cfg.max_num_seqs, cfg.max_num_batched_tokens)
        cg = len(sizes) * (0.01 + w * 0.002)
        graphs = f"PIECEWISE={len(sizes)} (largest={sizes[-1]}), FULL={len(sizes)}"
        lines = [
            ("gpu_model_runner.py:4890", f"Profiling CUDA graph memory: {graphs}"),
            ("gpu_model_runner.py:4912", f"Estimated CUDA graph memory: {cg:.2f} GiB total"),
        ]
        if w + act + cg > free:
            return oom(0.1, "profile_cudagraph_memory", cg, free - w - act, *lines)
        equiv = max(cfg.util - cg / total, 0.0)
        lines.append(
            (
                "gpu_worker.py:402",
                "CUDA graph memory profiling is enabled (default since v0.21.0). The current "
                f"--gpu-memory-utilization={cfg.util:.4f} is equivalent to "
                f"--gpu-memory-utilization={equiv:.4f} without CUDA graph memory profiling.",
            )
        )
        phase(0.1, "profile_cudagraph_memory", *lines)
    if cfg.kv_cache_memory_bytes is not None:
        kv = cfg.kv_cache_memory_bytes / GIB
        if w + act + cg + kv > free:
            return oom(0.05, "initialize_kv_cache", kv, free - w - act - cg)
    else:
        kv = req - w - act - cg
    where = "_initialize_kv_caches"
    avail = phase(0.05, where, ("gpu_worker.py:436", f"Available KV cache memory: {kv:.2f} GiB"))
    bpb = kv_bytes_per_token(cfg, m) * cfg.block_size
    blocks = math.floor(kv * GIB / bpb) if kv > 0 else 0
    length = cfg.max_model_len
    fit = (blocks - 1) * cfg.block_size
    if length <= 0 and blocks >= 2:
        length = min(m.max_len, fit)
        how = f"reduced from {m.max_len} to {length} to fit in available KV cache memory"
        note = how if length < m.max_len else f"full model context length {m.max_len} fits"
        avail.lines.append(("kv_cache_planning.py:640", "Auto-fit max_model_len: " + note))
    if blocks < 2:
        auto = "Cannot auto-fit max_model_len: not enough GPU memory available to serve even a "
        no_kv = f"{_NO_KV} See {DOCS} for more details."
        phase(0, where, error="ValueError: " + (auto + "single token." if length < 0 else no_kv))
        return boot
    need_blocks = -(-length // cfg.block_size)
    if need_blocks + 1 > blocks:
        est = f" Based on the available memory, the estimated maximum model length is {fit}."
        msg = (
            "ValueError: To serve at least one request with the model's max seq len "
            f"({length}), ({need_blocks * bpb / GIB:.1f} GiB KV cache is needed, which is larger "
            f"than the available KV cache memory ({kv:.1f} GiB).{est if fit > 0 else ''} {_TRY} "
            f"See {DOCS} for more details."
        )
        phase(0, where, error=msg)
        return boot
    boot.num_blocks, boot.max_model_len = blocks, length
    avail.lines.append(
        (
            "kv_cache_utils.py:1312",
            f"GPU KV cache size: {blocks * cfg.block_size:,} tokens, Maximum concurrency for "
            f"{length:,} tokens per request: {blocks / need_blocks:.2f}x",
        )
    )
    if not cfg.enforce_eager:
        if w + act + cg + kv + 0.25 * cg > free:
            return oom(0.15, "capture_model", 0.25 * cg, free - w - act - cg - kv)
        phase(
            0.15,
            "capture_model",
            (
                "gpu_model_runner.py:5101",
                f"Graph capturing finished in {round(0.15 * s)} secs, took {1.25 * cg:.2f} GiB",
            ),
            (
                "gpu_model_runner.py:5110",
                f"CUDA graph pool memory: {1.25 * cg:.2f} GiB (actual), {cg:.2f} GiB (estimated)",
            ),
        )
    boot.breakdown = (
        f"Free memory on device ({free:.2f}/{total:.2f} GiB) on startup. Desired GPU memory "
        f"utilization is ({cfg.util}, {req:.2f} GiB). Actual usage is {w:.2f} GiB for consumed "
        f"memory (weights + non-torch), {act:.2f} GiB for peak activation, and {cg:.2f} GiB for "
        f"CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory="
        f"{int(kv * GIB)}` to fit into requested memory, or `--kv-cache-memory="
        f"{int((free - w - act - 1.25 * cg) * GIB)}` to fully utilize gpu memory. Current kv cache "
        f"memory in use is {int(kv * GIB)} bytes."
    )
    return boot


@dataclass(eq=False)
class Request:
    """One generation request; the handler reads tokens from ``out``.

    ``out`` receives ``1`` per token, then ``"stop"``/``"length"``, or ``None`` if the engine died.
    """

    prompt: int
    target: int
    max_tokens: int
    out: Queue[int | str | None] = field(default_factory=Queue)
    need: int = 0  # tokens to prefill since the last admission
    filled: int = 0
    decoded: int = 0
    generated: int = 0
    aborted: bool = False

    @property
    def kv(self) -> int:
        return self.filled + self.decoded


class EngineDead(Exception):
    """The simulated engine has died; no request can be served."""


class BatchEngine:
    """A continuous-batching loop: admission by ``max_num_seqs`` and KV tokens, chunked prefill."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        capacity: int,
        time_scale: float,
        crash_under_load: bool = False,
        crash_after: int | None = None,
        on_death: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.max_num_seqs, self.mbt, self.capacity = max_num_seqs, max_num_batched_tokens, capacity
        self.scale, self.crash_under_load, self.crash_after = (
            time_scale,
            crash_under_load,
            crash_after,
        )
        self.on_death = on_death
        self.dead = self._stop = False
        self.waiting: deque[Request] = deque()
        self.running: dict[Request, None] = {}  # admission order; popitem() = newest
        self.counters = {"prompt": 0, "generation": 0, "preemptions": 0, "stop": 0, "length": 0}
        self.counters["abort"] = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="engine-loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and fail requests still in flight."""
        with self._cond:
            self._stop = True
            self._fail_all()
            self._cond.notify_all()

    def submit(self, prompt: int, target: int, max_tokens: int) -> Request:
        req = Request(prompt, max(1, min(target, max_tokens)), max_tokens)
        with self._cond:
            if self.dead or self._stop:
                raise EngineDead
            self.waiting.append(req)
            self._cond.notify_all()
        return req

    def abort(self, req: Request) -> None:
        with self._cond:
            req.aborted = True

    def snapshot(self) -> dict[str, float]:
        with self._cond:
            used = sum(r.kv for r in self.running)
            return {
                "running": len(self.running),
                "waiting": len(self.waiting),
                "kv_usage": used / self.capacity if self.capacity else 0.0,
                **self.counters,
            }

    def _fail_all(self) -> None:
        for req in [*self.running, *self.waiting]:
            req.out.put(None)
        self.running.clear()
        self.waiting.clear()

    def _schedule(self) -> tuple[list[Request], list[tuple[Request, int]]]:
        for req in [r for r in (*self.running, *self.waiting) if r.aborted]:
            if req in self.running:
                del self.running[req]
            else:
                self.waiting.remove(req)
            self.counters["abort"] += 1
        used = sum(r.kv for r in self.running)
        planned = used + sum(r.need - r.filled for r in self.running)  # prompts still to prefill
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if planned + req.prompt + req.max_tokens > self.capacity and self.running:
                break
            self.waiting.popleft()
            req.need, req.filled, req.decoded = req.prompt + req.generated, 0, 0
            self.running[req] = None
            planned += req.need
        decode = {r: None for r in self.running if r.filled >= r.need}
        while len(self.running) > 1 and used + len(decode) > self.capacity:
            victim, _ = self.running.popitem()  # preempt the newest; it is recomputed later
            decode.pop(victim, None)
            used -= victim.kv
            self.waiting.appendleft(victim)
            self.counters["preemptions"] += 1
        budget = max(self.mbt - len(decode), 0)
        prefill: list[tuple[Request, int]] = []
        for req in self.running:
            take = min(budget, req.need - req.filled)
            if take > 0:
                prefill.append((req, take))
                budget -= take
        return list(decode), prefill

    def _emit(self, req: Request) -> None:
        req.generated += 1
        self.counters["generation"] += 1
        req.out.put(1)
        if req.generated >= req.target:
            reason = "length" if req.target >= req.max_tokens else "stop"
            del self.running[req]
            self.counters[reason] += 1
            req.out.put(reason)

    def _commit(self, decode: list[Request], prefill: list[tuple[Request, int]]) -> None:
        for req in decode:
            if req in self.running:
                req.decoded += 1
                self._emit(req)
        for req, take in prefill:
            if req in self.running:
                req.filled += take
                if req.filled >= req.need:
                    self.counters["prompt"] += req.prompt
                    self._emit(req)

    def _crash_reason(self) -> str | None:
        if self.crash_under_load and len(self.running) >= 2:
            return "load"
        done = self.counters["stop"] + self.counters["length"]
        if self.crash_after is not None and done >= self.crash_after:
            return "requests"
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self.waiting or self.running):
                    self._cond.wait()
                if self._stop:
                    return
                decode, prefill = self._schedule()
                reason = self._crash_reason()
                self.dead, batch = reason is not None, len(self.running)
            if reason is None:
                tokens = sum(n for _, n in prefill)
                time.sleep((0.015 + 0.00025 * batch + 0.00001 * tokens) * self.scale)
                with self._cond:
                    if self._stop:
                        return
                    self._commit(decode, prefill)
                    reason = self._crash_reason()
                    self.dead = reason is not None
            if reason is not None:
                self.on_death(reason)
                with self._cond:
                    self._fail_all()
                return
