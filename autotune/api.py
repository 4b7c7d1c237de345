"""Library entry points: ``tune`` and ``serve``. The only place the modules are composed.

``serve`` imports the tuning path (and Optuna) only on a profile miss.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from autotune import __version__, paths
from autotune.errors import UserError
from autotune.feasibility import Prescreen
from autotune.hardware import ENV_GPU, Hardware, choose_device, resolve_hardware
from autotune.launcher import engine_version, resolve_command
from autotune.model import ModelSpec, resolve_model
from autotune.multimodal import image_count, supports_size_hints
from autotune.profiles import SCHEMA_VERSION, Profile, ProfileStore
from autotune.serve import announce, describe_miss, exec_or_print, find_profile, note, serve_argv
from autotune.space import SearchSpace, build_space, parse_candidate, vllm_defaults
from autotune.workload import Workload

CPU_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


@dataclass(frozen=True)
class TuneOptions:
    """Everything ``autotune tune`` (and ``serve`` on a miss) is given."""

    model: str
    gpu: str | None = None
    device: str = "auto"  # "auto", "gpu" or "cpu"
    ranges: Mapping[str, str | None] = field(default_factory=dict)
    min_model_len: int | None = None
    workload: Workload = field(default_factory=Workload)
    trials: int = 20
    timeout_s: float | None = None
    seed: int | None = 0
    storage: str | None = None
    state_dir: Path | None = None
    profiles_dir: Path | None = None
    vllm_cmd: str | None = None
    extra_args: tuple[str, ...] = ()
    enqueue: tuple[str, ...] = ()  # "name=value,name=value" candidates to try first
    startup_timeout_s: float = 900.0
    noise: float = 0.05
    quiet: bool = False
    objective: str = "throughput"
    min_images: int | None = None  # the profile must accept at least this many images
    images_max: bool = False  # --images max: find the largest image count that fits
    image_size_hint: tuple[int, int] | None = None  # --image-size: the resolution sent


@dataclass(frozen=True)
class Prepared:
    """Inputs resolved and checked before anything is launched."""

    command: list[str]
    spec: ModelSpec
    hardware: Hardware
    space: SearchSpace
    env: dict[str, str]
    workload: Workload


def _space(options: TuneOptions, spec: ModelSpec, hardware: Hardware, hints: bool) -> SearchSpace:
    return build_space(
        spec=spec,
        hardware=hardware,
        overrides=options.ranges,
        min_model_len=options.min_model_len,
        min_images=options.min_images,
        images_max=options.images_max,
        image_size_hint=options.image_size_hint if hints else None,
    )


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
    if options.trials < 1:
        raise UserError(f"--trials {options.trials}: at least one launch is needed")
    spec = resolve_model(options.model)
    hardware = hardware_for(options.gpu, options.device, options.vllm_cmd)
    command = resolve_command(options.vllm_cmd)
    hints = supports_size_hints(engine_version(command)) if spec.is_vision else False
    space = _space(options, spec, hardware, hints)
    wl = _image_workload(options, spec)
    wl.validate()
    _check_extra_args(options.extra_args, space)
    if wl.dataset is None and "max_model_len" in space:
        need = wl.input_len + wl.output_len
        if space["max_model_len"].low < need:
            raise UserError(
                f"max_model_len {space['max_model_len'].describe()} is shorter than the workload "
                f"needs (input {wl.input_len} + output {wl.output_len} = {need}); "
                "raise --min-model-len or shorten the workload"
            )
    # Notes only once every input is known to be good, so a bad input stays one line.
    if hardware.is_cpu:
        note(hardware.describe())
    elif hardware.source != "nvml":
        note(f"hardware {hardware.describe()}; not checked against the machine")
    if spec.is_vision and options.image_size_hint and not hints:
        note("this vLLM does not take image size hints: the image limit is a plain count")
    if not spec.known:
        spec = _prefetch(spec)
        if spec.known:  # now its length is known: search it too
            space = _space(options, spec, hardware, hints)
            wl = _image_workload(options, spec)
    for reason in spec.unknown_reasons:
        note(reason)
    return Prepared(
        command=command,
        spec=spec,
        hardware=hardware,
        space=space,
        env=engine_env(hardware),
        workload=wl,
    )


def hardware_for(gpu: str | None, device: str, vllm_cmd: str | None) -> Hardware:
    """``--device auto`` asks the vLLM that would be launched whether it is a CPU build."""
    version = None
    if device == "auto" and not gpu and not os.environ.get(ENV_GPU):
        version = engine_version(resolve_command(vllm_cmd))
    chosen = choose_device(device=device, gpu=gpu, engine_version=version)
    if version and chosen == "cpu":
        note(f"vLLM {version} is a CPU build: tuning for the CPU backend")
    return resolve_hardware(gpu=gpu, device=chosen)


def engine_env(hardware: Hardware) -> dict[str, str]:
    """The engine's environment. On the CPU backend VLLM_CPU_KVCACHE_SPACE would override the
    tuned --kv-cache-memory-bytes, so it is left out (and said so)."""
    env = dict(os.environ)
    if hardware.is_cpu and env.pop(CPU_KV_ENV, None) is not None:
        note(f"{CPU_KV_ENV} is ignored: autotune sizes the KV cache with --kv-cache-memory-bytes")
    return env


def _check_extra_args(extra: tuple[str, ...], space: SearchSpace) -> None:
    """Arguments after ``--`` must not set what autotune tunes or fixes (the last one would win
    silently and the profile would lie)."""
    for arg in extra:
        name = arg.split("=", 1)[0]
        for dim in space.dims:
            if name == dim.flag:
                raise UserError(f"{name} after --: give it as an autotune option ({name} V)")


def _prefetch(spec: ModelSpec) -> ModelSpec:
    """Download a hub model once before the first trial, when a Hugging Face CLI is present and
    the network allowed; then its spec is known and no trial's startup waits for a download."""
    cli = shutil.which("hf") or shutil.which("huggingface-cli")
    if cli is None or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return spec
    note(f"downloading {spec.model_id} before the first trial ({cli} download)")
    done = subprocess.run([cli, "download", spec.model_id], capture_output=True, check=False)
    if done.returncode != 0:
        note(f"could not download {spec.model_id} now; vLLM will try at launch")
        return spec
    return resolve_model(spec.model_id)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every engine is killed on the way out."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def tune(options: TuneOptions) -> tuple[Path, Profile]:
    """Run (or resume) the study and save the best feasible trial as a profile."""
    from autotune import study as st
    from autotune.objective import TrialRunner
    from autotune.progress import LineReporter, LiveReporter, make_console, trials_table
    from autotune.workload import build_requests

    prep = prepare(options)
    spec, hardware, space = prep.spec, prep.hardware, prep.space
    wl = prep.workload
    num_prompts = wl.num_prompts or max(64, 2 * int(space["max_num_seqs"].high))
    requests = build_requests(wl, num_prompts=num_prompts, vocab_size=spec.vocab_size)
    name = st.study_name(
        model=spec.name,
        hardware_key=hardware.key,
        workload=wl.signature(),
        objective=options.objective,
        space=space,
    )
    state = paths.state_dir(options.state_dir)
    storage = st.storage_url(options.storage, state_dir=state)
    study = st.open_study(name=name, storage=storage, seed=options.seed)
    study.set_user_attr("model", spec.to_dict() | {"name": spec.name})
    study.set_user_attr("hardware", hardware.to_dict())
    study.set_user_attr("workload", wl.to_dict() | {"signature": wl.signature()})
    study.set_user_attr("space", space.describe())
    fixed = frozenset(d.name for d in space.dims if d.fixed)
    runner = TrialRunner(
        env=prep.env,
        command=prep.command,
        model=options.model,
        requests=requests,
        extra_args=options.extra_args,
        fixed_by_user=fixed,
        startup_timeout_s=options.startup_timeout_s,
    )
    plan = st.StudyPlan(
        study=study,
        space=space,
        runner=runner,
        budget=options.trials,
        log_dir=state / "logs" / name.replace("/", "--"),
        default_params=space.default_params(vllm_defaults(hardware, spec)),
        enqueue=tuple(parse_candidate(space, text) for text in options.enqueue),
        timeout_s=options.timeout_s,
        prescreen=Prescreen(image_tokens=spec.image_tokens),
    )
    console = make_console()
    note(f"study {name} ({storage}); space: {space.describe()}")
    live = not options.quiet and console.is_terminal
    reporter = LiveReporter(console=console) if live else LineReporter()
    with _sigterm_as_interrupt(), reporter:
        st.run_study(plan, reporter=reporter)
    best = st.choose_best(study, noise=options.noise, most_images=options.images_max)
    if best is not None:
        study.set_user_attr("chosen_trial", best.number)
    rows = st.trial_rows(study.get_trials(deepcopy=False))
    console.print(trials_table(rows, best=best.number if best else None, title=f"study {name}"))
    note(f"trial logs: {plan.log_dir}")
    if best is None:
        raise UserError(
            f"no feasible configuration after {st.launches(study)} launches; "
            "see `autotune trials` and the logs, or widen the ranges"
        )
    profile = Profile(
        schema_version=SCHEMA_VERSION,
        model=spec.to_dict() | {"name": spec.name},
        hardware=hardware.to_dict(),
        vllm_version=best.user_attrs.get("vllm_version"),
        workload=wl.to_dict() | {"signature": wl.signature(), "num_prompts": num_prompts},
        objective=options.objective,
        vllm_args=dict(best.user_attrs["vllm_args"]),
        extra_args=list(options.extra_args),
        metrics=dict(best.user_attrs.get("metrics") or {}),
        startup=dict(best.user_attrs.get("startup") or {}),
        provenance={
            "study": name,
            "storage": storage if options.storage is None else "(given by --storage)",
            "trial": best.number,
            "log": best.user_attrs.get("log"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "autotune_version": __version__,
        },
    )
    path = ProfileStore(paths.profiles_dir(options.profiles_dir)).save(profile)
    if options.images_max:
        most = image_count(profile.vllm_args)
        note(f"largest image count that fits with usable throughput: {most} (trial {best.number})")
    note(f"best: trial {best.number}, {best.value:.1f} output tok/s; profile saved to {path}")
    return path, profile


def serve(
    options: TuneOptions,
    *,
    dry_run: bool = False,
    no_tune: bool = False,
    workload: str | None = None,
    profile_file: Path | None = None,
) -> None:
    """Exec vLLM with the matching profile; on a miss tune first (unless ``no_tune``)."""
    spec = resolve_model(options.model)
    hardware = hardware_for(options.gpu, options.device, options.vllm_cmd)
    command = resolve_command(options.vllm_cmd)
    store = ProfileStore(paths.profiles_dir(options.profiles_dir))
    match = find_profile(
        store=store, spec=spec, hardware=hardware, workload=workload, profile_file=profile_file
    )
    if match is None:
        miss = describe_miss(store=store, spec=spec, hardware=hardware, workload=workload)
        if no_tune:
            raise UserError(miss)
        if dry_run:
            raise UserError(miss + "; without --dry-run autotune would tune first")
        note(miss + "; tuning first")
        tune(replace(options, device=hardware.device))
        match = find_profile(store=store, spec=spec, hardware=hardware, workload=workload)
        if match is None:  # pragma: no cover - tune() raises when it saves nothing
            raise UserError(miss)
    announce(match, hardware=hardware)
    argv = serve_argv(
        command=command, model=options.model, profile=match.profile, extra=options.extra_args
    )
    exec_or_print(argv, dry_run=dry_run, env=engine_env(hardware))
