"""Click options shared by ``tune`` and ``serve``, and their translation into ``TuneOptions``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or not (0 < int(w) <= 8192 >= int(h) > 0):
        raise click.BadParameter(f"{value!r}: expected WIDTHxHEIGHT, e.g. 512x512")
    return (int(w), int(h))


def _k_range(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    lo, _, hi = value.partition(":")
    if not lo.isdigit() or not (hi or lo).isdigit() or int(lo) > int(hi or lo):
        raise click.BadParameter(f"{value!r}: expected K or LOW:HIGH, e.g. 2 or 1:4")
    return (int(lo), int(hi or lo))


def options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


hardware = options(
    click.option(
        "--device",
        type=click.Choice(["auto", "gpu", "cpu"]),
        default="auto",
        show_default=True,
        help="vLLM backend; auto means cpu when the vLLM to launch is a CPU build (+cpu).",
    ),
    click.option(
        "--gpu",
        metavar="NAME:MEMORY_GIB[xCOUNT]",
        help="Hardware when NVML finds no GPU "
        "(or to override it), e.g. H100:80. Env: AUTOTUNE_GPU.",
    ),
    click.option(
        "--vllm-cmd",
        metavar="CMD",
        help="Command that starts the engine [default: 'vllm serve'; env AUTOTUNE_VLLM_CMD].",
    ),
    click.option(
        "--profiles-dir",
        type=click.Path(path_type=Path),
        help="Where profiles are kept "
        "[env AUTOTUNE_PROFILES_DIR; default: a per-user data directory].",
    ),
)

tuning = options(
    click.option(
        "--gpu-memory-utilization",
        metavar="V|LOW:HIGH",
        help="Fix or re-range (default 0.70:0.98).",
    ),
    click.option(
        "--kv-cache-memory-bytes",
        metavar="N|LOW:HIGH",
        help="Tune the KV cache in bytes (K/M/G suffixes) instead of the utilization; "
        "the CPU backend's memory dimension (default 256M:8G, at most a quarter of RAM).",
    ),
    click.option(
        "--max-num-seqs",
        metavar="N|LOW:HIGH",
        help="Fix or re-range (default 8:1024, ending at the workload's requests the KV cache "
        "can hold, never below vLLM's default).",
    ),
    click.option(
        "--max-num-batched-tokens",
        metavar="N|LOW:HIGH",
        help="Fix or re-range (default 512:16384).",
    ),
    click.option(
        "--max-model-len",
        metavar="N|LOW:HIGH",
        help="Fix or re-range (default "
        "--min-model-len up to the model's maximum, longest preferred).",
    ),
    click.option(
        "--limit-mm-per-prompt",
        "image_limit",
        metavar="N|LOW:HIGH",
        help="Vision models: fix or re-range the image limit per prompt (default "
        "--min-images..16; passed to vLLM as JSON).",
    ),
    click.option(
        "--tune",
        "opt_in",
        multiple=True,
        metavar="NAME",
        help="Also search an opt-in vLLM setting (repeatable): kv-cache-dtype (auto|fp8; fp8 "
        "changes outputs), prefix-caching, chunked-prefill (on|off).",
    ),
    click.option(
        "--min-images",
        type=click.IntRange(min=0),
        help="Vision models: the profile must accept at least this many images per prompt.",
    ),
    click.option(
        "--images",
        "images_mode",
        type=click.Choice(["max"]),
        help="max: find the largest image count that fits on this GPU with a usable throughput.",
    ),
    click.option(
        "--image-size",
        metavar="WxH",
        callback=_size,
        help="The image resolution the application sends (workload, and vLLM's profiling hint).",
    ),
    click.option(
        "--images-per-request",
        metavar="K|LOW:HIGH",
        callback=_k_range,
        help="Images per benchmark request, fixed or uniform (default --min-images or 1).",
    ),
    click.option(
        "--min-model-len",
        type=click.IntRange(min=16),
        help="Shortest context the "
        "application accepts (default: 4096 or the model's maximum if smaller).",
    ),
    click.option(
        "--input-len",
        type=click.IntRange(min=1),
        default=512,
        show_default=True,
        help="Prompt tokens per synthetic request.",
    ),
    click.option(
        "--output-len",
        type=click.IntRange(min=1),
        default=128,
        show_default=True,
        help="Output tokens per request (ignore_eos).",
    ),
    click.option(
        "--num-prompts",
        type=click.IntRange(min=1),
        help="Requests per benchmark (default: twice the largest max_num_seqs, at least 64).",
    ),
    click.option(
        "--dataset",
        type=click.Path(path_type=Path),
        help="JSONL of prompts or chat messages instead of synthetic prompts.",
    ),
    click.option(
        "--trials",
        type=click.IntRange(min=1),
        default=20,
        show_default=True,
        help="Launch budget of the study (engine starts, resumed runs included).",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        help="Stop starting trials after this many seconds.",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed."),
    click.option(
        "--enqueue",
        multiple=True,
        metavar="NAME=VALUE[,...]",
        help="A candidate to try first, e.g. today's production settings (repeatable).",
    ),
    click.option(
        "--storage",
        metavar="URL",
        help="Optuna storage URL (e.g. postgresql://...); default: SQLite in the state directory. "
        "Workers on several machines join one study by giving the same URL.",
    ),
    click.option(
        "--gpus",
        metavar="all|0,1,2,3",
        help="Tune on these GPUs at once: one engine per GPU (or per tensor-parallel group), "
        "one shared study and --trials budget.",
    ),
    click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        help="Studies and trial logs [env AUTOTUNE_STATE_DIR].",
    ),
    click.option(
        "--startup-timeout",
        type=click.FloatRange(min=1),
        default=900.0,
        show_default=True,
        help="Seconds an engine may take to become ready.",
    ),
    click.option(
        "--noise",
        type=click.FloatRange(0, 1),
        default=0.05,
        show_default=True,
        help="Results within this share of the best count as equal; the longest "
        "max_model_len among them wins.",
    ),
    click.option("--quiet", is_flag=True, help="Plain log lines instead of a live display."),
    click.option(
        "--no-prescreen",
        is_flag=True,
        help="Launch every candidate, even one the calibrated memory model or earlier failures "
        "say cannot start (predictions are still recorded).",
    ),
    click.option(
        "--no-guide",
        is_flag=True,
        help="The sampler alone: no climb to the memory edge, local moves or lift.",
    ),
    click.argument("extra", nargs=-1, type=click.UNPROCESSED),
)

goals = options(
    click.option(
        "--objective",
        type=click.Choice(["throughput", "goodput", "memory", "pareto"]),
        default="throughput",
        show_default=True,
        help="throughput: output tok/s; goodput: requests/s meeting the SLOs; memory: the "
        "smallest reservation above --min-throughput; pareto: throughput against memory.",
    ),
    click.option(
        "--slo",
        "slos",
        multiple=True,
        metavar="NAME=MS",
        help="Latency limit (repeatable): ttft_p95_ms, tpot_p95_ms, itl_p99_ms, e2e_p99_ms "
        "(and the p95/p99 of each); a trial that misses one is infeasible.",
    ),
    click.option(
        "--min-throughput", type=float, help="Output tok/s floor (needed by --objective memory)."
    ),
    click.option(
        "--memory-budget",
        metavar="FRACTION|GIB",
        help="Never reserve more GPU memory than this (0.6, or 18GiB).",
    ),
    click.option(
        "--concurrency", type=click.IntRange(min=1), help="Requests in flight at most [all]."
    ),
    click.option(
        "--request-rate",
        type=click.FloatRange(min=0, min_open=True),
        help="Poisson arrivals per second instead of all at once.",
    ),
    click.option(
        "--warmup",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Requests sent before the measured ones, not measured.",
    ),
    click.option(
        "--repeats",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="Measurements of each finalist (1: no re-measurement); count against --trials.",
    ),
    click.option(
        "--finalists",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="How many of the best are re-measured.",
    ),
    click.option(
        "--statistic",
        type=click.Choice(["worst", "median"]),
        default="worst",
        show_default=True,
        help="How repeats are summarised before choosing.",
    ),
    click.option("--no-soak", is_flag=True, help="Skip the worst-case load run of the winner."),
    click.option("--no-prune", is_flag=True, help="Never stop a clearly worse benchmark early."),
    click.option(
        "--patience",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Stop after this many launches without improving by --min-improvement (0: never).",
    ),
    click.option(
        "--min-improvement",
        type=click.FloatRange(0, 1),
        default=0.01,
        show_default=True,
        help="What counts as an improvement for --patience (a share of the best).",
    ),
)


def tune_options(model: str, kw: dict[str, Any]) -> Any:
    from autotune.app.prepare import TuneOptions
    from autotune.load.workload import Workload

    ranges = {
        name: kw.pop(name)
        for name in (
            "gpu_memory_utilization",
            "kv_cache_memory_bytes",
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_model_len",
            "image_limit",
        )
    }
    workload = Workload(
        input_len=kw.pop("input_len"),
        output_len=kw.pop("output_len"),
        num_prompts=kw.pop("num_prompts"),
        dataset=kw.pop("dataset"),
        images_per_request=kw.pop("images_per_request"),
        **({"image_size": size} if (size := kw.get("image_size")) else {}),
    )
    return TuneOptions(
        model=model,
        gpu=kw.pop("gpu"),
        device=kw.pop("device"),
        ranges=ranges,
        min_model_len=kw.pop("min_model_len"),
        workload=workload,
        trials=kw.pop("trials"),
        timeout_s=kw.pop("timeout"),
        seed=kw.pop("seed"),
        storage=kw.pop("storage"),
        state_dir=kw.pop("state_dir"),
        profiles_dir=kw.pop("profiles_dir"),
        vllm_cmd=kw.pop("vllm_cmd"),
        extra_args=tuple(kw.pop("extra")),
        enqueue=tuple(kw.pop("enqueue")),
        startup_timeout_s=kw.pop("startup_timeout"),
        noise=kw.pop("noise"),
        quiet=kw.pop("quiet"),
        min_images=kw.pop("min_images"),
        images_max=kw.pop("images_mode") == "max",
        image_size_hint=kw.pop("image_size"),
        prescreen=not kw.pop("no_prescreen"),
        guide=not kw.pop("no_guide"),
        gpus=kw.pop("gpus", None),
        tune=tuple(kw.pop("opt_in", ())),
        objective=kw.pop("objective"),
        slos=tuple(kw.pop("slos")),
        min_throughput=kw.pop("min_throughput"),
        memory_budget=kw.pop("memory_budget"),
        concurrency=kw.pop("concurrency"),
        request_rate=kw.pop("request_rate"),
        warmup=kw.pop("warmup"),
        repeats=kw.pop("repeats"),
        finalists=kw.pop("finalists"),
        statistic=kw.pop("statistic"),
        soak=not kw.pop("no_soak"),
        prune=not kw.pop("no_prune"),
        patience=kw.pop("patience"),
        min_improvement=kw.pop("min_improvement"),
    )
