"""From the commands' keyword arguments to the library's ``TuneOptions``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from autotune.app.options import TuneOptions
from autotune.errors import UserError
from autotune.load.tokens import tokenizer_file
from autotune.load.workload import Workload


def tune_options(model: str, kw: dict[str, Any]) -> TuneOptions:
    """``kw`` (click's values) are consumed; what is left is the command's own."""
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
        lengths_from=kw.pop("lengths_from"),
        shared_prefix_len=kw.pop("shared_prefix_len"),
        prefix_groups=kw.pop("prefix_groups"),
        tokenizer=tokenizer_file(model),
        **({"image_size": size} if (size := kw.get("image_size")) else {}),
    )
    trace = kw.pop("trace")
    if trace is not None:  # its rows are the requests, sent at their timestamps
        if workload.dataset is not None:
            raise UserError("--trace FILE is the dataset as well: drop --dataset")
        workload = replace(workload, dataset=trace)
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
        stall_timeout_s=kw.pop("stall_timeout"),
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
        burstiness=kw.pop("burstiness"),
        ramp_up_s=kw.pop("ramp_up"),
        trace=trace,
        trace_speed=kw.pop("trace_speed"),
        warmup=kw.pop("warmup"),
        repeats=kw.pop("repeats"),
        finalists=kw.pop("finalists"),
        statistic=kw.pop("statistic"),
        soak=not kw.pop("no_soak"),
        prune=not kw.pop("no_prune"),
        patience=kw.pop("patience"),
        min_improvement=kw.pop("min_improvement"),
    )
