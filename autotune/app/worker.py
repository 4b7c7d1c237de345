"""One tuning worker: prepare, run (or resume) the study, choose, soak and save the profile (the
worker that finishes the study does). ``autotune.app.tune`` runs one, or one per GPU group."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from autotune import paths
from autotune.app import preflight
from autotune.app.interrupt import sigterm_as_interrupt
from autotune.app.options import TuneOptions
from autotune.app.prepare import prepare
from autotune.app.views import summary_line
from autotune.engine import lease
from autotune.engine.defaults import vllm_defaults
from autotune.engine.multimodal import IMAGE_DIM, image_count, most_images_line
from autotune.engine.safety import redact, redact_url, split_extra
from autotune.errors import UserError
from autotune.hardware import Hardware
from autotune.load.workload import Workload
from autotune.model import ModelSpec
from autotune.profiles.build import Chosen, build_profile
from autotune.profiles.store import Profile, ProfileStore
from autotune.search.space import parse_candidate
from autotune.trial.record import TrialRecord

__all__ = ["run_worker"]
log = logging.getLogger(__name__)


def run_worker(options: TuneOptions) -> tuple[Path, Profile] | None:
    """Run (or resume) the study and save the best feasible trial as a profile. None: another
    worker of the study finishes it (``--gpus``, or workers sharing ``--storage``)."""
    from autotune.app import from_study
    from autotune.app.settings import finish_for, load_shape
    from autotune.load.workload import build_requests
    from autotune.report.progress import LineReporter, LiveReporter, make_console, trials_table
    from autotune.search import finalize, saved
    from autotune.search import study as st
    from autotune.search import study_keys as keys
    from autotune.search.moves.guide import for_goal
    from autotune.search.moves.load_shape import Load
    from autotune.search.screen_by_dtype import DtypeScreens
    from autotune.search.workers import claims
    from autotune.search.workers import coordination as workers
    from autotune.trial.runner import TrialRunner

    prep = prepare(options)
    spec, hardware, space = prep.spec, prep.hardware, prep.space
    wl = prep.workload
    goal, finish = prep.goal, finish_for(options)
    shape = load_shape(options, goal, wl, vocab_size=spec.vocab_size)
    num_prompts = wl.num_prompts or max(64, 2 * int(space["max_num_seqs"].high))
    requests = build_requests(wl, num_prompts=num_prompts, vocab_size=spec.vocab_size)
    name = st.study_name(
        model=spec.name,
        hardware_key=hardware.key,
        workload=options.signature(wl),
        objective=goal.name(),
        space=space,
    )
    state = paths.state_dir(options.state_dir)
    preflight.check_dirs(profiles=paths.profiles_dir(options.profiles_dir), state=state)
    lease.reap(lease.lease_dir(state))  # engines of a tuner killed with its watchdog
    storage = st.storage_url(options.storage, state_dir=state)
    seed = workers.worker_seed(options.seed, shared=options.storage is not None)
    with preflight.storage_errors(storage):
        study = st.open_study(name=name, storage=storage, seed=seed, goal=goal)
        workers.check_fingerprint(study, hardware.to_dict())  # writes: the storage's preflight
        study.set_user_attr(keys.MODEL, spec.to_dict() | {"name": spec.name})
        study.set_user_attr(keys.HARDWARE, hardware.to_dict())
        study.set_user_attr(keys.WORKLOAD, wl.to_dict() | {"signature": options.signature(wl)})
        study.set_user_attr(keys.SPACE, space.describe())
        study.set_user_attr(
            keys.INPUTS,
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
        stall_timeout_s=options.stall_timeout_s,
        lease_dir=lease.lease_dir(state),
        **shape,
    )
    knowledge = DtypeScreens.build(
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
                requests,
                concurrency=options.concurrency,
                image_tokens=spec.image_tokens or 0,
                searched_images=options.images_max,  # --images max: the limit is the finding
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
    log.info(f"study {name} ({redact_url(storage)}); space: {space.describe()}")
    live = not options.quiet and console.is_terminal
    total = options.trials  # every launch counts against it: (n/--trials)
    reporter = LiveReporter(console=console, total=total) if live else LineReporter(total=total)
    with sigterm_as_interrupt(), reporter, preflight.storage_errors(storage):
        if (done := st.launches(study)) >= total:
            log.info(
                f"nothing to launch: the study has run {done} of --trials {total} launches; "
                "choosing from them (raise --trials to search further)"
            )
        claims.defaults_first(study, plan.default_params)
        finalize.search(plan, finish, reporter=reporter, budget=options.trials)
        if (others := workers.finisher(study)) is not None:
            _leave(others)
            return None
        if not claims.claim_finish(study):
            _leave("another worker claimed the finish")
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
        saved.sections(picked, study=study, goal=goal, finish=finish) if picked else (None, {})
    )
    best = study.trials[main.chosen.number] if main is not None else None
    if best is not None:
        study.set_user_attr(keys.CHOSEN, best.number)
    rows = st.trial_rows(study.get_trials(deepcopy=False))
    console.print(trials_table(rows, best=best.number if best else None, title=f"study {name}"))
    log.info(f"trial logs: {plan.log_dir}")
    if best is None:
        raise UserError(
            f"no feasible configuration after {st.launches(study)} launches"
            + (" (or none survived the soak)" if finish.soak else "")
            + "; see `autotune trials` and the logs, or widen the ranges"
        )
    chosen = Chosen.of(
        TrialRecord.of(best),
        number=best.number,
        study=name,
        num_prompts=num_prompts,
        sections=sections,
    )
    images = next(((int(d.low), int(d.high)) for d in space.dims if d.name == IMAGE_DIM), None)
    saved_to = _save(
        options,
        spec=spec,
        hardware=hardware,
        workload=wl,
        chosen=chosen,
        state=state,
        images=images,
    )
    claims.finish_done(study)  # saved: no later worker redoes it once this one has exited
    return saved_to


def _save(
    options: TuneOptions,
    *,
    spec: ModelSpec,
    hardware: Hardware,
    workload: Workload,
    chosen: Chosen,
    state: Path,
    images: tuple[int, int] | None = None,
) -> tuple[Path, Profile]:
    """Build the profile of ``chosen`` and write it to the profile store."""
    dropped = split_extra(options.extra_args)[1]
    if dropped:
        log.info(
            "not saved in the profile: %s (pass it after -- to serve)", shlex.join(redact(dropped))
        )
    profile = build_profile(
        model=spec.to_dict() | {"name": spec.name},
        hardware=hardware.to_dict(),
        workload=workload.to_dict() | {"signature": options.signature(workload)},
        arrivals=None if (pace := options.arrivals()) is None else pace.to_dict(),
        objective=options.objective,
        extra_args=options.extra_args,
        chosen=chosen,
        storage_given=options.storage is not None,
        state=state,
    )
    where = paths.profiles_dir(options.profiles_dir)
    with preflight.profile_errors(where):
        path = ProfileStore(where).save(profile)
    if options.images_max and images is not None:
        line = most_images_line(
            image_count(profile.vllm_args), trial=chosen.number, searched=images
        )
        log.info(line)
    log.info(summary_line(path, profile))
    return path, profile


def _leave(why: str) -> None:
    log.info(
        f"this worker's share of the study is done; {why}: the worker that finishes the study "
        "saves the profile (or later: autotune profiles save MODEL --from-study)"
    )
