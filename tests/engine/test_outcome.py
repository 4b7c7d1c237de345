"""The classifier against vLLM's verbatim texts (vllm-facts.md §1.4, vllm-cpu.md §5)."""

from __future__ import annotations

import pytest

from autotune.engine.outcome import Outcome, classify_runtime, classify_startup, parse_startup

P = "(EngineCore pid=4242) "
WRAPPER = (
    "RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {}\n"
)
LOADED = (
    P
    + "INFO 11-21 10:00:01 [gpu_model_runner.py:1] "
    + "Model loading took 14.99 GiB memory and 3.1 seconds\n"
)
KV = P + "INFO 11-21 10:00:05 [gpu_worker.py:1] Available KV cache memory: 9.60 GiB\n"
TORCH_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 224.00 MiB. GPU 0 has a total "
    "capacity of 44.34 GiB of which 160.81 MiB is free. Including non-PyTorch memory, this "
    "process has 44.1 GiB memory in use.\n"
)

CASES = {
    "kv_too_small": (
        LOADED
        + KV
        + P
        + "ERROR ValueError: To serve at least one request with the model's max seq len "
        "(262144), (16.0 GiB KV cache is needed, which is larger than the available KV cache "
        "memory (9.6 GiB)."
        " Based on the available memory, the estimated maximum model length is 157216. Try "
        "increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
        "engine.\n" + WRAPPER,
        Outcome.KV_TOO_SMALL,
    ),
    "kv_too_small_011": (
        "ValueError: To serve at least one request with the models's max seq len (4096), (0.5 GiB"
        " KV cache is needed, which is larger than the available KV cache memory (0.2 GiB). Try\n",
        Outcome.KV_TOO_SMALL,
    ),
    "no_kv": (
        LOADED + P + "INFO Available KV cache memory: -1.23 GiB\n" + P + "ERROR ValueError: No "
        "available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
        "initializing the engine.\n" + WRAPPER,
        Outcome.NO_KV_CACHE,
    ),
    "free_memory": (
        P + "ERROR ValueError: Free memory on device cuda:0 (10.41/22.49 GiB) on startup is less "
        "than desired GPU memory utilization (0.85, 19.12 GiB). Decrease GPU memory utilization "
        "or reduce GPU memory used by other processes.\n" + WRAPPER,
        Outcome.FREE_MEMORY,
    ),
    "free_memory_cpu": (
        "ValueError: Available memory on node 0 (8.61/10.46 GiB) on startup is less than desired "
        "CPU memory utilization (0.92, 9.63 GiB). On the CPU backend...\n" + WRAPPER,
        Outcome.FREE_MEMORY,
    ),
    "oom_weights": (
        P + "ERROR Failed to load model - not enough GPU memory. Try lowering "
        "--gpu-memory-utilization ... (original error: CUDA out of memory)\n" + TORCH_OOM + WRAPPER,
        Outcome.OOM_WEIGHTS,
    ),
    "oom_profiling": (LOADED + TORCH_OOM + WRAPPER, Outcome.OOM_PROFILING),
    "oom_graphs_estimate": (
        LOADED + P + "INFO Profiling CUDA graph memory: PIECEWISE=51\n" + TORCH_OOM + WRAPPER,
        Outcome.OOM_CUDA_GRAPHS,
    ),
    "oom_capture": (
        LOADED + KV + P + "INFO GPU KV cache size: 78,640 tokens, Maximum concurrency for 8,192 "
        "tokens per request: 9.60x\n" + "RuntimeError: CUDA error: out of memory\n" + WRAPPER,
        Outcome.OOM_CUDA_GRAPHS,
    ),
    "invalid_pydantic": (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for CacheConfig\n"
        "gpu_memory_utilization\n  Input should be less than or equal to 1 [type=less_than_equal,"
        " input_value=1.5, input_type=float]\n",
        Outcome.INVALID_CONFIG,
    ),
    "invalid_argparse": (
        "usage: vllm serve [model_tag] [options]\nvllm serve: error: unrecognized arguments: --x\n",
        Outcome.INVALID_CONFIG,
    ),
    "invalid_len": (
        "Value error, User-specified max_model_len (4096) is greater than the derived "
        "max_model_len (max_position_embeddings=2048.0 or model_max_length=None in model's "
        "config.json).\n",
        Outcome.INVALID_CONFIG,
    ),
    "not_found_path": (
        "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
        "'namespace/repo_name': './does-not-exist'.\n",
        Outcome.MODEL_NOT_FOUND,
    ),
    "not_found_offline": (
        "huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached "
        "snapshot folder for the specified revision on the local disk and outgoing traffic has "
        "been disabled.\n",
        Outcome.MODEL_NOT_FOUND,
    ),
    "port": ("OSError: [Errno 98] Address already in use\n", Outcome.PORT_IN_USE),
    "timeout": (
        "TimeoutError: Timed out waiting for engine core processes to start. Waited 600s\n",
        Outcome.STARTUP_TIMEOUT,
    ),
    "other": ("Segmentation fault (core dumped)\n", Outcome.STARTUP_CRASH),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_classify_startup(case: str) -> None:
    log, expected = CASES[case]
    assert classify_startup(log, returncode=1).outcome is expected


def test_kv_too_small_captures_estimate() -> None:
    got = classify_startup(CASES["kv_too_small"][0], returncode=1)
    assert got.estimated_max_model_len == 157216
    assert "max seq len (262144)" in got.reason


def test_first_root_cause_wins_over_later_text() -> None:
    # An OOM-looking line after the real cause must not change the class.
    log = CASES["free_memory"][0] + TORCH_OOM
    assert classify_startup(log, returncode=1).outcome is Outcome.FREE_MEMORY


def test_pydantic_reason_names_the_field() -> None:
    got = classify_startup(CASES["invalid_pydantic"][0], returncode=1)
    assert "gpu_memory_utilization" in got.reason


def test_feasibility_mapping() -> None:
    assert Outcome.KV_TOO_SMALL.infeasible and Outcome.OOM_PROFILING.infeasible
    assert Outcome.CRASH_UNDER_LOAD.infeasible
    for harness in (Outcome.HARNESS_ERROR, Outcome.INVALID_CONFIG, Outcome.PORT_IN_USE):
        assert not harness.infeasible


def test_runtime_oom() -> None:
    got = classify_runtime("serving...\n" + TORCH_OOM + "EngineDeadError: EngineCore died\n")
    assert got.outcome is Outcome.CRASH_UNDER_LOAD and got.reason.startswith("OOM under load")


def test_parse_startup_both_versions() -> None:
    new = parse_startup(
        "(APIServer pid=1) INFO vLLM API server version 0.33.0\n"
        + LOADED
        + KV
        + P
        + "INFO GPU KV cache size: 78,640 tokens, Maximum concurrency for 8,192 tokens per "
        "request: 9.60x\n"
    )
    assert (new.kv_cache_tokens, new.max_concurrency, new.concurrency_len) == (78640, 9.6, 8192)
    assert (new.kv_cache_gib, new.weights_gib, new.vllm_version) == (9.6, 14.99, "0.33.0")
    old = parse_startup(
        "INFO GPU KV cache size: 238,208 tokens\nINFO Maximum concurrency for 32,768 tokens per "
        "request: 7.27x\n"
    )
    assert (old.kv_cache_tokens, old.max_concurrency) == (238208, 7.27)


# The memory breakdown (vllm-facts §1.3): 0.33 at INFO; 0.11 at DEBUG with other wording.
BREAKDOWN_033 = (
    P + "INFO 11-21 10:00:09 [gpu_worker.py:460] Free memory on device (78.63/79.19 GiB) on "
    "startup. Desired GPU memory utilization is (0.9, 71.27 GiB). Actual usage is 15.60 GiB for "
    "consumed memory (weights + non-torch), 1.20 GiB for peak activation, and 0.50 GiB for "
    "CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=57949233152` "
    "to fit into requested memory, or `--kv-cache-memory=66270101504` to fully utilize gpu "
    "memory. Current kv cache memory in use is 57949233152 bytes.\n"
)
BREAKDOWN_011 = (
    P + "DEBUG 11-21 10:00:09 [gpu_worker.py:290] Free memory on device (78.63/79.19 GiB) on "
    "startup. Desired GPU memory utilization is (0.9, 71.27 GiB). Actual usage is 14.99 GiB for "
    "weight, 1.20 GiB for peak activation, 0.61 GiB for non-torch memory, and 0.50 GiB for "
    "CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=57949233152` "
    "to fit into requested memory, or `--kv-cache-memory=66270101504` to fully utilize gpu "
    "memory. Current kv cache memory in use is 57949233152 bytes.\n"
)


def test_parse_the_memory_breakdown() -> None:
    new = parse_startup(LOADED + KV + BREAKDOWN_033)
    assert (new.free_gib, new.total_gib, new.utilization) == (78.63, 79.19, 0.9)
    assert (new.consumed_gib, new.peak_activation_gib, new.cuda_graph_gib) == (15.6, 1.2, 0.5)
    assert new.non_torch_gib is None and new.kv_cache_bytes == 57949233152
    old = parse_startup(BREAKDOWN_011)
    assert (old.weights_gib, old.non_torch_gib, old.peak_activation_gib) == (14.99, 0.61, 1.2)
    assert old.consumed_gib == 15.6 and old.cuda_graph_gib == 0.5
    assert parse_startup(BREAKDOWN_011).to_dict()["kv_cache_bytes"] == 57949233152


def test_parse_partial_startups() -> None:
    # a failure before the breakdown: the CUDA graph estimate and the block size still count
    early = parse_startup(
        P + "INFO [gpu_model_runner.py:4890] Profiling CUDA graph memory: PIECEWISE=51 "
        "(largest=512), FULL=51\n" + P + "INFO [gpu_model_runner.py:4912] Estimated CUDA graph "
        "memory: 2.03 GiB total\n" + P + "INFO [cuda.py:1] Setting kv cache block size to 64 "
        "for FLASHMLA backend(s).\n" + P + "INFO Available KV cache memory: -1.23 GiB\n"
    )
    assert (early.cuda_graph_gib, early.block_size, early.kv_cache_gib) == (2.03, 64, -1.23)
    assert early.peak_activation_gib is None and early.utilization is None
    # free memory below the requested utilization: what was free, of what total
    short = parse_startup(
        "ValueError: Free memory on device cuda:0 (10.41/22.49 GiB) on startup is less than "
        "desired GPU memory utilization (0.85, 19.12 GiB). Decrease GPU memory utilization or "
        "reduce GPU memory used by other processes.\n"
    )
    assert (short.free_gib, short.total_gib) == (10.41, 22.49)
    # vLLM-CPU 0.32 (a real launch's lines)
    cpu = parse_startup(
        "(Worker pid=2901) INFO 11-21 22:28:36 [cpu_worker.py:260] Explicitly set (4.0/9.84) GiB "
        "for KV cache on node 0.\n(EngineCore pid=2887) INFO 11-21 22:28:36 [kv_cache_utils.py:"
        "2327] CPU KV cache size: 4,194,304 tokens, Maximum concurrency for 2,048 tokens per "
        "request: 2048.00x\n"
    )
    assert (cpu.kv_cache_gib, cpu.kv_cache_tokens, cpu.concurrency_len) == (4.0, 4194304, 2048)
