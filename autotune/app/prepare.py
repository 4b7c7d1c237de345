"""Resolve and check a tuning request before anything is launched: model, hardware and backend,
search space, workload and the engine's command and environment."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, replace

from autotune.app.hub import check_hub_model
from autotune.app.options import TuneOptions
from autotune.engine.defaults import vllm_defaults
from autotune.engine.launcher import DEFAULT_VLLM_CMD, ENV_VLLM_CMD, engine_version, resolve_command
from autotune.engine.multimodal import supports_size_hints
from autotune.engine.safety import canonical_args, parallel_sizes
from autotune.errors import UserError
from autotune.hardware import ENV_GPU, Hardware, choose_device, engine_hardware, resolve_hardware
from autotune.load.workload import Workload
from autotune.memory.setup import base_model, engine_flags, seqs_cap
from autotune.model import ModelSpec, resolve_model
from autotune.search.goal import Goal, apply_budget
from autotune.search.opt_in import widest_kv_flags, with_opt_in
from autotune.search.space import MEMORY_DIMS, SearchSpace
from autotune.search.space_build import bound_max_num_seqs, build_space

log = logging.getLogger(__name__)

CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


@dataclass(frozen=True)
class Prepared:
    """Inputs resolved and checked before anything is launched."""

    command: list[str]
    spec: ModelSpec
    hardware: Hardware
    space: SearchSpace
    env: dict[str, str]
    workload: Workload
    goal: Goal


def _space(
    options: TuneOptions, spec: ModelSpec, hardware: Hardware, hints: bool, goal: Goal
) -> SearchSpace:
    space = build_space(
        spec=spec,
        hardware=hardware,
        overrides=options.ranges,
        min_model_len=options.min_model_len,
        min_images=options.min_images,
        images_max=options.images_max,
        image_size_hint=options.image_size_hint if hints else None,
    )
    space = with_opt_in(space, options.tune, extra_args=options.extra_args)
    budget = goal.memory_budget
    user_range = any(options.ranges.get(name) is not None for name in MEMORY_DIMS)
    space = apply_budget(space, budget=budget, total_gib=hardware.memory_gib, user_range=user_range)
    return _bound_seqs(space, options, spec, hardware)


def _bound_seqs(
    space: SearchSpace, options: TuneOptions, spec: ModelSpec, hardware: Hardware
) -> SearchSpace:
    """A default ``max_num_seqs`` range ends at the workload's typical requests (mean input +
    output tokens) that the KV cache can hold at the top of the memory range, by the analytic
    model's upper bound; never below vLLM's default. A range the user gave is kept."""
    wl = options.workload
    if options.ranges.get("max_num_seqs") is not None or wl.dataset is not None:
        return space
    flags = engine_flags([*options.extra_args, *widest_kv_flags(space)])
    found = base_model(spec=spec, hardware=hardware, flags=flags)
    memory = next((d for d in space.dims if d.name in MEMORY_DIMS), None)
    if found is None or memory is None or "max_num_seqs" not in space:
        return space
    cap = seqs_cap(
        model=found[0],
        memory_dim=memory.name,
        memory_high=float(memory.high),
        request_tokens=wl.mean_request_tokens,
    )
    keep = int(vllm_defaults(hardware, spec)["max_num_seqs"])
    return space if cap is None else bound_max_num_seqs(space, cap=cap, keep=keep)


def _image_workload(options: TuneOptions, spec: ModelSpec) -> Workload:
    """A vision model is measured with images: --min-images per request unless told otherwise."""
    wl = options.workload
    if spec.is_vision and wl.images_per_request is None and wl.dataset is None:
        k = options.min_images or 1
        wl = replace(wl, images_per_request=(k, k))
    if options.image_size_hint is not None:
        wl = replace(wl, image_size=options.image_size_hint)
    return wl


def prepare(options: TuneOptions) -> Prepared:
    """Resolve the command, model, hardware and space; say what could not be checked."""
    options = options.check()  # numbers in range, a model id, arguments after -- spelt out
    spec = resolve_model(options.model)
    machine = hardware_for(options.gpu, options.device, options.vllm_cmd, tuning=True)
    hardware = engine_hardware(machine, sizes=parallel_sizes(options.extra_args))  # the key
    goal = options.goal(total_gib=hardware.memory_gib)  # bad goal input: one line, first
    # Every input is checked before the engine command is resolved (no vLLM needed for that).
    space = _space(options, spec, hardware, False, goal)
    wl = _image_workload(options, spec)
    wl.validate()
    _check_extra_args(options.extra_args, space)
    if options.storage:  # a file that is no study database: refused before anything starts
        from autotune.search.workers.storage import check_sqlite  # Optuna: only when tuning

        check_sqlite(options.storage)
    if wl.dataset is None and "max_model_len" in space:
        need = wl.max_request_tokens
        if space["max_model_len"].low < need:
            sizes = f"input {wl.input_len} + output {wl.output_len}"
            if wl.lengths_from is not None:
                sizes = f"its longest request in {wl.lengths_from.name}, input + output"
            raise UserError(
                f"max_model_len {space['max_model_len'].describe()} is shorter than the workload "
                f"needs ({sizes} = {need}); raise --min-model-len or shorten the workload"
            )
    check_hub_model(spec)  # an uncached hub id offline: one line before any study or launch
    command = resolve_command(options.vllm_cmd)
    hints = supports_size_hints(engine_version(command)) if spec.is_vision else False
    if hints:  # this vLLM takes image size hints: the image limit carries them
        space = _space(options, spec, hardware, hints, goal)
    # Notes only once every input is known to be good, so a bad input stays one line.
    if hardware.is_cpu:
        log.info(hardware.describe())
    elif hardware.source != "nvml":
        log.info(f"hardware {hardware.describe()}; not checked against the machine")
    if spec.is_vision and options.image_size_hint and not hints:
        log.info("this vLLM does not take image size hints: the image limit is a plain count")
    if not spec.known:
        spec = _prefetch(spec)
        if spec.known:  # now its length is known: search it too
            space = _space(options, spec, hardware, hints, goal)
            wl = _image_workload(options, spec)
    for reason in spec.unknown_reasons:
        log.info(reason)
    return Prepared(
        command=command,
        spec=spec,
        hardware=hardware,
        space=space,
        env=engine_env(hardware),
        workload=wl,
        goal=goal,
    )


def hardware_for(
    gpu: str | None, device: str, vllm_cmd: str | None, *, tuning: bool = False
) -> Hardware:
    """``--device auto`` asks the vLLM that would be launched whether it is a CPU build (said
    when ``tuning``: serve, its dry run and the profile views look up without a word)."""
    version = None
    if device == "auto" and not gpu and not os.environ.get(ENV_GPU):
        version = engine_version(resolve_command(vllm_cmd))
    chosen = choose_device(device=device, gpu=gpu, engine_version=version)
    if version and chosen == "cpu" and tuning:
        log.info(f"vLLM {version} is a CPU build: tuning for the CPU backend")
    return resolve_hardware(gpu=gpu, device=chosen)


def engine_env(hardware: Hardware) -> dict[str, str]:
    """The engine's environment. On the CPU backend VLLM_CPU_KVCACHE_SPACE would override the
    tuned --kv-cache-memory-bytes, so it is left out (and said so)."""
    env = dict(os.environ)
    if hardware.is_cpu and env.pop(CPU_KV_ENV, None) is not None:
        log.info(
            f"{CPU_KV_ENV} is ignored: autotune sizes the KV cache with --kv-cache-memory-bytes"
        )
    return env


def _check_extra_args(extra: tuple[str, ...], space: SearchSpace) -> None:
    """Arguments after ``--`` must not set what autotune tunes or fixes (the last one would win
    silently and the profile would lie)."""
    for arg in canonical_args(extra):  # --max-num-seq and --max_num_seqs are --max-num-seqs
        name = arg.split("=", 1)[0]
        for dim in space.dims:
            if name in (dim.flag, "--no-" + dim.flag.removeprefix("--")):
                raise UserError(f"{name} after --: give it as an autotune option ({dim.flag} V)")


def _prefetch(spec: ModelSpec) -> ModelSpec:
    """Download a hub model once before the first trial, when a Hugging Face CLI is present and
    the network allowed; then its spec is known and no trial's startup waits for a download."""
    cli = shutil.which("hf") or shutil.which("huggingface-cli")
    if cli is None or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return spec
    log.info(f"downloading {spec.model_id} before the first trial ({cli} download)")
    done = subprocess.run([cli, "download", spec.model_id], capture_output=True, check=False)
    if done.returncode != 0:
        log.info(f"could not download {spec.model_id} now; vLLM will try at launch")
        return spec
    return resolve_model(spec.model_id)


def command_and_version(vllm_cmd: str | None, *, strict: bool) -> tuple[list[str], str | None]:
    """The engine command and the vLLM version it would launch. Not ``strict`` (a dry run, a
    read-only view): a command that is not installed here is kept as written, version unknown."""
    try:
        command = resolve_command(vllm_cmd)
    except UserError:
        if strict:
            raise
        return shlex.split(vllm_cmd or os.environ.get(ENV_VLLM_CMD) or DEFAULT_VLLM_CMD), None
    return command, engine_version(command)
