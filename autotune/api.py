"""Library entry points: ``tune`` and ``serve``. The only place the modules are composed.

``serve`` imports the tuning path (and Optuna) only on a profile miss.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from pathlib import Path

from autotune import paths
from autotune.errors import UserError
from autotune.interrupt import sigterm_as_interrupt
from autotune.lookup import ProfileLookup, lookup
from autotune.prepare import TuneOptions, engine_env, prepare
from autotune.profiles import Profile
from autotune.ranges import parse_candidate
from autotune.safety import redact_url, split_extra
from autotune.serve import announce, combined_extra, exec_or_print, note, serve_argv
from autotune.space import vllm_defaults
from autotune.verify import Verification, drift_table, measure, workload_of

__all__ = ["ProfileLookup", "TuneOptions", "lookup", "serve", "tune", "verify"]


def tune(options: TuneOptions) -> tuple[Path, Profile] | None:
    """Run (or resume) the study and save the best feasible trial as a profile. None: another
    worker of the study finishes it (``--gpus``, or workers sharing ``--storage``)."""
    from autotune import finalize, from_study, workers
    from autotune import study as st
    from autotune.guide import Load, for_goal
    from autotune.knowledge import Knowledge
    from autotune.objective import TrialRunner
    from autotune.progress import LineReporter, LiveReporter, make_console, trials_table
    from autotune.saving import Chosen, save_profile
    from autotune.tuning import finish_for, goal_for, load_shape
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
    knowledge = Knowledge.build(
        spec=spec,
        hardware=hardware,
        space=space,
        extra_args=options.extra_args,
        prescreen=options.prescreen,
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
        guide=for_goal(
            kind=goal.kind,
            space=space,
            seed=options.seed,
            knowledge=knowledge,
            load=Load.of(
                requests, concurrency=options.concurrency, image_tokens=spec.image_tokens or 0
            ),
        )
        if options.guide
        else None,
        goal=goal,
        prune=options.prune,
        patience=options.patience,
        min_improvement=options.min_improvement,
    )
    console = make_console()
    note(f"study {name} ({redact_url(storage)}); space: {space.describe()}")
    live = not options.quiet and console.is_terminal
    reporter = LiveReporter(console=console) if live else LineReporter()
    with sigterm_as_interrupt(), reporter:
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
    chosen = Chosen(
        number=best.number,
        user_attrs=dict(best.user_attrs),
        sections=sections,
        study=name,
        num_prompts=num_prompts,
    )
    return save_profile(
        options, spec=spec, hardware=hardware, workload=wl, chosen=chosen, state=state
    )


def _tune_on_gpus(options: TuneOptions) -> None:
    from autotune import parallel

    tp, extra = parallel.tensor_parallel(options)
    with sigterm_as_interrupt():
        failed = parallel.tune_on_gpus(replace(options, extra_args=extra), tensor_parallel=tp)
    if failed:
        raise UserError(f"{failed} worker(s) failed; see their lines above")


def _leave(why: str) -> None:
    note(
        f"this worker's share of the study is done; {why}: the worker that finishes the study "
        "saves the profile (or later: autotune profiles save MODEL --from-study)"
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
        tune(replace(options, device=where.hardware.device, extra_args=where.extra_args))
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
    with sigterm_as_interrupt():
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
