"""Library entry points: ``tune`` and ``serve``. The only place the modules are composed.

``serve`` imports the tuning path (and Optuna) only on a profile miss.
"""

from __future__ import annotations

import datetime as _dt
import shlex
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import FrameType

from autotune import __version__, paths
from autotune.errors import UserError
from autotune.feasibility import Prescreen
from autotune.model import resolve_model
from autotune.multimodal import image_count
from autotune.prepare import TuneOptions, command_and_version, engine_env, hardware_for, prepare
from autotune.profiles import SCHEMA_VERSION, Profile, ProfileStore
from autotune.ranges import parse_candidate
from autotune.safety import redact, split_extra
from autotune.serve import announce, describe_miss, exec_or_print, find_profile, note, serve_argv
from autotune.space import vllm_defaults

__all__ = ["TuneOptions", "serve", "tune"]


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
    kept, dropped = split_extra(options.extra_args)
    if dropped:
        note(f"not saved in the profile: {shlex.join(redact(dropped))} (pass it after -- to serve)")
    profile = Profile(
        schema_version=SCHEMA_VERSION,
        model=spec.to_dict() | {"name": spec.name},
        hardware=hardware.to_dict(),
        vllm_version=best.user_attrs.get("vllm_version"),
        workload=wl.to_dict() | {"signature": wl.signature(), "num_prompts": num_prompts},
        objective=options.objective,
        vllm_args=dict(best.user_attrs["vllm_args"]),
        extra_args=kept,
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
    command, version = command_and_version(options.vllm_cmd, strict=not dry_run)
    hardware = hardware_for(options.gpu, options.device, options.vllm_cmd)
    store = ProfileStore(paths.profiles_dir(options.profiles_dir))
    found = partial(find_profile, store=store, spec=spec, hardware=hardware, workload=workload)
    match = found(profile_file=profile_file, vllm_version=version)
    if match is None:
        miss = describe_miss(
            store=store, spec=spec, hardware=hardware, workload=workload, vllm_version=version
        )
        if no_tune:
            raise UserError(miss)
        if dry_run:
            raise UserError(miss + "; without --dry-run autotune would tune first")
        note(miss + "; tuning first")
        tune(replace(options, device=hardware.device))
        match = found(vllm_version=version)
        if match is None:  # pragma: no cover - tune() raises when it saves nothing
            raise UserError(miss)
    announce(match, hardware=hardware)
    argv = serve_argv(
        command=command, model=options.model, profile=match.profile, extra=options.extra_args
    )
    exec_or_print(argv, dry_run=dry_run, env=engine_env(hardware))
