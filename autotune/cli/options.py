"""Click options shared by ``tune`` and ``serve``: hardware, ranges, workload and the study."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from autotune.cli.params import finite_text, floats, image_size, ints, k_range, user_args

F = TypeVar("F", bound=Callable[..., Any])
# The options that make a workload's signature: given to ``serve``, its profile comes first.
WORKLOAD_OPTIONS = (
    "input_len",
    "output_len",
    "dataset",
    "images_per_request",
    "image_size",
    "lengths_from",
    "shared_prefix_len",
    "prefix_groups",
    "request_rate",
    "burstiness",
    "ramp_up",
    "trace",
    "trace_speed",
)


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
        callback=finite_text,
        help="Fix or re-range (default 0.70:0.98).",
    ),
    click.option(
        "--kv-cache-memory-bytes",
        metavar="N|LOW:HIGH",
        callback=finite_text,
        help="Tune the KV cache in bytes (K/M/G suffixes) instead of the utilization; "
        "the CPU backend's memory dimension (default 256M:8G, at most a quarter of RAM).",
    ),
    click.option(
        "--max-num-seqs",
        metavar="N|LOW:HIGH",
        callback=finite_text,
        help="Fix or re-range (default 8:1024, ending at the workload's requests the KV cache "
        "can hold, never below vLLM's default).",
    ),
    click.option(
        "--max-num-batched-tokens",
        metavar="N|LOW:HIGH",
        callback=finite_text,
        help="Fix or re-range (default 512:16384).",
    ),
    click.option(
        "--max-model-len",
        metavar="N|LOW:HIGH",
        callback=finite_text,
        help="Fix or re-range (default "
        "--min-model-len up to the model's maximum, longest preferred).",
    ),
    click.option(
        "--limit-mm-per-prompt",
        "image_limit",
        metavar="N|LOW:HIGH",
        callback=finite_text,
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
        type=ints("min_images"),
        help="Vision models: the profile must accept at least this many images per prompt.",
    ),
    click.option(
        "--images",
        "images_mode",
        type=click.Choice(["max"]),
        help="max: find the largest image count per prompt that fits on this GPU with a usable "
        "throughput, searched from --min-images up to what the longest context holds "
        "(max_model_len / tokens per image), at most 64; the log says when that top was reached.",
    ),
    click.option(
        "--image-size",
        metavar="WxH",
        callback=image_size,
        help="The image resolution the application sends (workload, and vLLM's profiling hint; "
        "at most 8192x8192).",
    ),
    click.option(
        "--images-per-request",
        metavar="K|LOW:HIGH",
        callback=k_range,
        help="Images per benchmark request, fixed or uniform (default --min-images or 1; "
        "at most 999).",
    ),
    click.option(
        "--min-model-len",
        type=ints("min_model_len"),
        help="Shortest context the "
        "application accepts (default: 4096 or the model's maximum if smaller).",
    ),
    click.option(
        "--input-len",
        type=ints("input_len"),
        default=512,
        show_default=True,
        help="Prompt tokens per synthetic request.",
    ),
    click.option(
        "--output-len",
        type=ints("output_len"),
        default=128,
        show_default=True,
        help="Output tokens per request (ignore_eos).",
    ),
    click.option(
        "--num-prompts",
        type=ints("num_prompts"),
        help="Requests per benchmark (default: twice the largest max_num_seqs, at least 64).",
    ),
    click.option(
        "--dataset",
        type=click.Path(path_type=Path),
        help="Prompts instead of synthetic ones: ShareGPT JSON (a list, not *.jsonl; the first "
        "human turn, as many output tokens as its reply) or JSONL (prompt or messages, "
        "output_len, images, timestamp).",
    ),
    click.option(
        "--lengths-from",
        type=click.Path(path_type=Path),
        help="Synthetic prompts whose (input, output) token counts are drawn from this ShareGPT "
        "JSON or JSONL file (tokens counted by the model's tokenizer.json, else ~4 chars each).",
    ),
    click.option(
        "--shared-prefix-len",
        type=ints("shared_prefix_len"),
        default=0,
        show_default=True,
        help="Tokens every prompt starts with from one of --prefix-groups system prompts (inside "
        "--input-len; words of a system message for chats, added before dataset prompts).",
    ),
    click.option(
        "--prefix-groups",
        type=ints("prefix_groups"),
        default=1,
        show_default=True,
        help="Distinct shared prefixes; requests take them in turn.",
    ),
    click.option(
        "--trials",
        type=ints("trials"),
        default=20,
        show_default=True,
        help="Launch budget of the study (engine starts, resumed runs included).",
    ),
    click.option(
        "--timeout",
        type=floats("timeout_s"),
        help="Stop starting trials after this many seconds.",
    ),
    click.option("--seed", type=ints("seed"), default=0, show_default=True, help="Sampler seed."),
    click.option(
        "--enqueue",
        multiple=True,
        metavar="NAME=VALUE[,...]",
        callback=finite_text,
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
        type=floats("startup_timeout_s"),
        default=900.0,
        show_default=True,
        help="Seconds an engine may take to become ready.",
    ),
    click.option(
        "--stall-timeout",
        type=floats("stall_timeout_s"),
        default=None,
        help="Seconds without a streamed token before a benchmark's engine counts as hung "
        "[default: derived from the workload and the engine's own pace].",
    ),
    click.option(
        "--noise",
        type=floats("noise"),
        default=0.05,
        show_default=True,
        help="Results within this share of the best (and, when re-measured, inside each "
        "other's spread) count as equal; the longest max_model_len among them wins, then "
        "the smallest memory reservation.",
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
    click.argument("extra", nargs=-1, type=click.UNPROCESSED, callback=user_args),
)
