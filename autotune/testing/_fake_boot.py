"""Simulated GPU memory phases of ``vllm serve`` startup, with vLLM's log lines and failure texts.

Pure arithmetic; ``fake_engine`` sleeps through the phases and prints what they say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autotune.testing._fake_log import ENGINE_DEAD, Out, oom_text
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig
from autotune.units import GIB

CONTEXT_GIB = 0.5
DOCS = "https://docs.vllm.ai/en/latest/configuration/conserving_memory/"


_Line = tuple[str, str]  # (source, message)
_ENCODER_FRAMES = [
    ("v1/worker/gpu_model_runner.py", "_execute_mm_encoder"),
    ("model_executor/models/llava.py", "embed_multimodal"),
    ("model_executor/models/clip.py", "forward"),
]


_NO_KV = (
    "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, "
    "despite its name)."
)
_TRY = (
    "Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) "
    "or decreasing `max_model_len` when initializing the engine."
)


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
    """Weight memory per GPU; a vision tower counts unless ``limit 0`` leaves it unbuilt."""
    if env.weights is not None:
        return env.weights
    params = m.params() + (m.vision_params if cfg.image_limit > 0 else 0)
    return params * (4 if cfg.dtype in ("float32", "float") else 2) / GIB / cfg.tp


def profiled_images(cfg: ServeConfig, m: ModelInfo) -> int:
    """Dummy images vLLM's startup profile runs through the encoder (0: text model or limit 0).

    ``max(1, min(budget // T, max_num_seqs × per_prompt))`` with the encoder budget
    ``max(max_num_batched_tokens, T)`` and ``per_prompt = max(1, min(limit, max_model_len // T))``.
    """
    t = m.image_tokens
    if t is None or cfg.image_limit <= 0:
        return 0
    budget = max(cfg.max_num_batched_tokens, t)
    length = cfg.max_model_len if cfg.max_model_len > 0 else m.max_len
    per_prompt = max(1, min(cfg.image_limit, length // t))
    return max(1, min(budget // t, cfg.max_num_seqs * per_prompt))


def image_gib(cfg: ServeConfig, m: ModelInfo, env: FakeEnv) -> float:
    """Encoder-profile memory of one dummy image: ``IMAGE_MIB`` scaled by the hinted area."""
    side = m.image_size or 1
    width, height = min(cfg.image_width or side, side), min(cfg.image_height or side, side)
    return env.image_mib / 1024 * (width * height) / (side * side)


def _encoder_log(cfg: ServeConfig, m: ModelInfo) -> tuple[list[_Line], list[_Line]]:
    """(INFO lines, WARNING lines) of the encoder profile."""
    t, n = m.image_tokens, profiled_images(cfg, m)
    if t is None:
        return [], []
    if n == 0:
        off = (
            "All non-text modalities supported by the model have been explicitly disabled via "
            "limit_mm_per_prompt. Encoder cache will not be initialized."
        )
        return [], [("encoder_cache_manager.py:336", off)]
    warnings = [
        (
            "dummy_inputs.py:98",
            f"image.{name} override ({hint}) exceeds model's maximum {name} ({m.image_size}), "
            "will be ignored",
        )
        for name, hint in (("width", cfg.image_width), ("height", cfg.image_height))
        if hint is not None and hint > m.image_size
    ]
    line = (
        f"Encoder cache will be initialized with a budget of {max(cfg.max_num_batched_tokens, t)} "
        f"tokens, and profiled with {n} image items of the maximum feature size."
    )
    return [("gpu_model_runner.py:6165", line)], warnings


@dataclass
class Phase:
    """A slice of startup: its share of the startup time, engine log lines, and maybe an error."""

    share: float
    where: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (source, message)
    error: str | None = None  # final exception line, raised in EngineCore
    before_error: list[tuple[str, str]] = field(default_factory=list)  # ERROR log lines
    warnings: list[_Line] = field(default_factory=list)  # WARNING lines, printed first
    frames: list[_Line] = field(default_factory=list)  # (file, function) frames under `where`


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
    enc_lines, enc_warnings = _encoder_log(cfg, m)
    per_image = image_gib(cfg, m, env)
    enc = profiled_images(cfg, m) * per_image  # dummy images, kept in the encoder cache
    if w + enc > free:  # the encoder runs first, so it fails before the dummy forward
        done = math.floor((free - w) / per_image)
        oom(0.25, "profile_run", per_image, free - w - done * per_image, *enc_lines)
        boot.phases[-1].warnings, boot.phases[-1].frames = enc_warnings, list(_ENCODER_FRAMES)
        return boot
    if w + enc + act > free:
        oom(0.25, "profile_run", act, free - w - enc, *enc_lines)
        boot.phases[-1].warnings = enc_warnings
        return boot
    act += enc  # the encoder outputs count toward the peak activation
    profile = phase(0.25, "profile_run", *enc_lines, *([] if cfg.enforce_eager else [compile_line]))
    profile.warnings = enc_warnings
    cg = 0.0
    if not cfg.enforce_eager:
        sizes = capture_sizes(cfg.max_num_seqs, cfg.max_num_batched_tokens)
        per_size = 0.01 + w * 0.002 if env.graph_mib is None else env.graph_mib / 1024
        cg = len(sizes) * per_size
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


def death_messages(env: FakeEnv, util: float, out: Out) -> tuple[str, str]:
    """What the engine core and the API server log when the engine dies under load: an OOM
    in a step, for the memory the reservation at ``util`` leaves free."""
    left = env.total - env.used - CONTEXT_GIB - util * env.total
    exc = oom_text(max(left, 0.0) + 0.25, env.total, left, env.total - env.used - left)
    core = "EngineCore encountered a fatal error.\n" + out.traceback("step", exc)
    return core, "AsyncLLM output_handler failed.\n" + ENGINE_DEAD
