"""Library entry points: ``tune`` and ``serve``. The only place the modules are composed.

``serve`` imports the tuning path (and Optuna) only on a profile miss.
"""

from __future__ import annotations

import datetime as _dt
import shlex
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from autotune import __version__, paths
from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.model import ModelSpec, resolve_model
from autotune.multimodal import image_count
from autotune.prepare import TuneOptions, command_and_version, engine_env, hardware_for, prepare
from autotune.profiles import SCHEMA_VERSION, SINGLE_DEVICE, Profile, ProfileStore
from autotune.ranges import parse_candidate
from autotune.safety import parallel_sizes, redact, redact_url, split_extra
from autotune.serve import (
    Match,
    announce,
    combined_extra,
    describe_miss,
    exec_or_print,
    find_profile,
    note,
    serve_argv,
)
from autotune.space import vllm_defaults
from autotune.verify import Verification, drift_table, measure, workload_of

__all__ = ["TuneOptions", "lookup", "serve", "tune", "verify"]


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


def tune(options: TuneOptions) -> tuple[Path, Profile] | None:
    """Run (or resume) the study and save the best feasible trial as a profile. None: another
    worker of the study finishes it (``--gpus``, or workers sharing ``--storage``)."""
    from autotune import finalize, from_study, workers
    from autotune import study as st
    from autotune.guide import for_goal
    from autotune.objective import TrialRunner
    from autotune.predict import MemoryKnowledge
    from autotune.progress import LineReporter, LiveReporter, make_console, trials_table
    from autotune.tuning import finish_for, goal_for, load_shape, warnings_for
    from autotune.workload import build_requests

    if options.gpus is not None:
        _tune_on_gpus(options)
        return None
    prep = prepare(options)
    spec, hardware, space = prep.spec, prep.hardware, prep.space
    wl = prep.workload
    goal, finish = goal_for(options, hardware), finish_for(options)
    shape = load_shape(options, goal, wl, vocab_size=spec.vocab_size)
    num_prompts = wl.num_prompts or max(64, 2 * int(space["max_num_seqs"].high))
    requests = build_requests(wl, num_prompts=num_prompts, vocab_size=spec.vocab_size)
    name = st.study_name(
        model=spec.name,
        hardware_key=hardware.key,
        workload=wl.signature(),
        objective=goal.name(),
        space=space,
    )
    state = paths.state_dir(options.state_dir)
    storage = st.storage_url(options.storage, state_dir=state)
    seed = workers.worker_seed(options.seed, shared=options.storage is not None)
    study = st.open_study(name=name, storage=storage, seed=seed, goal=goal)
    workers.check_fingerprint(study, hardware.to_dict())
    study.set_user_attr("model", spec.to_dict() | {"name": spec.name})
    study.set_user_attr("hardware", hardware.to_dict())
    study.set_user_attr("workload", wl.to_dict() | {"signature": wl.signature()})
    study.set_user_attr("space", space.describe())
    study.set_user_attr(
        from_study.INPUTS,
        from_study.inputs(
            extra_args=split_extra(options.extra_args)[0],
            num_prompts=num_prompts,
            objective=options.objective,
            goal=goal,
        ),
    )
    fixed = frozenset(d.name for d in space.dims if d.fixed)
    runner = TrialRunner(
        env=prep.env,
        command=prep.command,
        model=options.model,
        requests=requests,
        extra_args=options.extra_args,
        fixed_by_user=fixed,
        startup_timeout_s=options.startup_timeout_s,
        **shape,
    )
    knowledge = MemoryKnowledge.build(
        spec=spec, hardware=hardware, extra_args=options.extra_args, prescreen=options.prescreen
    )
    plan = st.StudyPlan(
        study=study,
        space=space,
        runner=runner,
        budget=options.trials - finalize.reserve(finish, trials=options.trials),
        log_dir=state / "logs" / name.replace("/", "--"),
        default_params=space.default_params(vllm_defaults(hardware, spec)),
        enqueue=tuple(parse_candidate(space, text) for text in options.enqueue),
        timeout_s=options.timeout_s,
        prescreen=knowledge,
        guide=for_goal(kind=goal.kind, space=space, seed=options.seed, knowledge=knowledge),
        goal=goal,
        prune=options.prune,
        patience=options.patience,
        min_improvement=options.min_improvement,
    )
    console = make_console()
    note(f"study {name} ({redact_url(storage)}); space: {space.describe()}")
    live = not options.quiet and console.is_terminal
    reporter = LiveReporter(console=console) if live else LineReporter()
    with _sigterm_as_interrupt(), reporter:
        st.run_study(plan, reporter=reporter)
        if (others := workers.finisher(study)) is not None:
            _leave(others)
            return None
        finalize.remeasure(plan, finish, reporter=reporter, budget=options.trials)
        picked = finalize.choose(
            plan,
            finish,
            workload=wl,
            vocab_size=spec.vocab_size,
            reporter=reporter,
            image_tokens=spec.image_tokens,
        )
    main, sections = (
        finalize.sections(picked, study=study, goal=goal, finish=finish) if picked else (None, {})
    )
    best = study.trials[main.chosen.number] if main is not None else None
    if best is not None:
        study.set_user_attr("chosen_trial", best.number)
    rows = st.trial_rows(study.get_trials(deepcopy=False))
    console.print(trials_table(rows, best=best.number if best else None, title=f"study {name}"))
    note(f"trial logs: {plan.log_dir}")
    if best is None:
        raise UserError(
            f"no feasible configuration after {st.launches(study)} launches"
            + (" (or none survived the soak)" if finish.soak else "")
            + "; see `autotune trials` and the logs, or widen the ranges"
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
        warnings=warnings_for(options.extra_args),
        **sections,
        extra_args=kept,
        metrics=dict(best.user_attrs.get("metrics") or {}),
        startup=dict(best.user_attrs.get("startup") or {}),
        parallel=SINGLE_DEVICE | parallel_sizes(kept),
        provenance={
            "study": name,
            "storage": "default (state directory)" if options.storage is None else "--storage",
            "trial": best.number,
            "log": _relative(best.user_attrs.get("log"), state),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "autotune_version": __version__,
        },
    )
    path = ProfileStore(paths.profiles_dir(options.profiles_dir)).save(profile)
    if options.images_max:
        most = image_count(profile.vllm_args)
        note(f"largest image count that fits with usable throughput: {most} (trial {best.number})")
    tput = float(profile.metrics.get("output_throughput") or 0.0)
    note(f"best: trial {best.number}, {tput:.1f} output tok/s; profile saved to {path}")
    return path, profile


def _tune_on_gpus(options: TuneOptions) -> None:
    from autotune import parallel

    tp, extra = parallel.tensor_parallel(options)
    with _sigterm_as_interrupt():
        failed = parallel.tune_on_gpus(replace(options, extra_args=extra), tensor_parallel=tp)
    if failed:
        raise UserError(f"{failed} worker(s) failed; see their lines above")


def _leave(why: str) -> None:
    note(
        f"this worker's share of the study is done; {why}: the worker that finishes the study "
        "saves the profile (or later: autotune profiles save MODEL --from-study)"
    )


def _relative(log: str | None, state: Path) -> str | None:
    """A trial log's path inside the state directory (no machine-specific prefix in profiles)."""
    if log is None:
        return None
    try:
        return str(Path(log).resolve().relative_to(state.resolve()))
    except ValueError:
        return Path(log).name


@dataclass(frozen=True)
class ProfileLookup:
    """What ``serve``, ``profiles verify/show/export`` look for, and where."""

    store: ProfileStore
    spec: ModelSpec
    hardware: Hardware
    command: list[str]
    version: str | None
    workload: str | None
    parallel: dict[str, int]

    def find(self, *, profile_file: Path | None = None) -> Match | None:
        return find_profile(
            store=self.store,
            spec=self.spec,
            hardware=self.hardware,
            workload=self.workload,
            parallel=self.parallel,
            vllm_version=self.version,
            profile_file=profile_file,
        )

    def miss(self) -> str:
        return describe_miss(
            store=self.store,
            spec=self.spec,
            hardware=self.hardware,
            workload=self.workload,
            vllm_version=self.version,
            parallel=self.parallel,
        )


def lookup(options: TuneOptions, *, workload: str | None, strict: bool) -> ProfileLookup:
    """Resolve model, engine command and version, and hardware as ``serve`` does."""
    spec = resolve_model(options.model)
    command, version = command_and_version(options.vllm_cmd, strict=strict)
    return ProfileLookup(
        store=ProfileStore(paths.profiles_dir(options.profiles_dir)),
        spec=spec,
        hardware=hardware_for(options.gpu, options.device, options.vllm_cmd),
        command=command,
        version=version,
        workload=workload,
        parallel=parallel_sizes(options.extra_args),
    )


def serve(
    options: TuneOptions,
    *,
    dry_run: bool = False,
    no_tune: bool = False,
    workload: str | None = None,
    profile_file: Path | None = None,
    pick: str | None = None,
) -> None:
    """Exec vLLM with the matching profile (``pick``: one of its Pareto variants); on a miss
    tune first (unless ``no_tune``)."""
    where = lookup(options, workload=workload, strict=not dry_run)
    match = where.find(profile_file=profile_file)
    if match is None:
        miss = where.miss()
        if no_tune:
            raise UserError(miss)
        if dry_run:
            raise UserError(miss + "; without --dry-run autotune would tune first")
        note(miss + "; tuning first")
        tune(replace(options, device=where.hardware.device))
        match = where.find()
        if match is None:  # pragma: no cover - tune() raises when it saves nothing
            raise UserError(miss)
    announce(match, hardware=where.hardware)
    profile = match.profile if pick is None else match.profile.variant(pick)
    if pick is not None and profile.memory:
        note(f"--pick {pick}: reserves {profile.memory.get('reserved_gib')} GiB")
    argv = serve_argv(
        command=where.command, model=options.model, profile=profile, extra=options.extra_args
    )
    exec_or_print(argv, dry_run=dry_run, env=engine_env(where.hardware))


def verify(
    options: TuneOptions,
    *,
    workload: str | None = None,
    profile_file: Path | None = None,
    tolerance: float = 0.1,
    repeats: int = 1,
) -> Verification:
    """Re-measure the profile ``serve`` would use with its own workload; print the drift."""
    from rich.console import Console

    from autotune.objective import TrialRunner
    from autotune.workload import build_requests

    if repeats < 1:
        raise UserError(f"--repeats {repeats}: at least one run is needed")
    if not 0 <= tolerance < 1:
        raise UserError(f"--tolerance {tolerance}: give a fraction such as 0.1")
    where = lookup(options, workload=workload, strict=True)
    match = where.find(profile_file=profile_file)
    if match is None:
        raise UserError(where.miss())
    announce(match, hardware=where.hardware)
    profile = match.profile
    wl, num_prompts = workload_of(profile)
    runner = TrialRunner(
        command=where.command,
        model=options.model,
        requests=build_requests(wl, num_prompts=num_prompts, vocab_size=where.spec.vocab_size),
        extra_args=tuple(combined_extra(profile, options.extra_args)),
        env=engine_env(where.hardware),
        startup_timeout_s=options.startup_timeout_s,
    )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    log_dir = paths.state_dir(options.state_dir) / "logs" / "verify" / f"{match.path.stem}-{stamp}"
    with _sigterm_as_interrupt():
        result = measure(
            profile=profile,
            runner=runner,
            log_dir=log_dir,
            repeats=repeats,
            tolerance=tolerance,
            on_phase=lambda text: note(text) if not options.quiet else None,
        )
    measured_on = next((r.vllm_version for r in result.results if r.vllm_version), where.version)
    if result.drifts:
        title = f"tuned on vLLM {profile.vllm_version}, measured on vLLM {measured_on}"
        Console(width=None if Console().is_terminal else 120).print(
            drift_table(result, title=title)
        )
    return result
