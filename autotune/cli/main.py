"""Command line: parses options and calls the library (``autotune.app.tune``). No logic here.

Optuna is imported only by the commands that tune or read studies, never by ``--help`` or
``serve`` with a matching profile.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from autotune import __version__, logs
from autotune.cli.goal_options import goals
from autotune.cli.options import WORKLOAD_OPTIONS, hardware, tuning
from autotune.cli.params import model_id, user_args
from autotune.cli.profiles import profiles
from autotune.cli.translate import tune_options
from autotune.cli.vllm_flags import VllmFlagsCommand
from autotune.errors import UserError
from autotune.masking import mask, remember_args


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autotune")
def cli() -> None:
    """Find the best vLLM configuration for a model on this GPU, prove it under load, save it as
    a profile and serve with it."""


@cli.command()
@click.argument("model", callback=model_id)
@hardware
@tuning
@goals
@click.option("--json", "as_json", is_flag=True,
              help="At the end, print the chosen profile's summary as JSON on stdout.")  # fmt: skip
def tune(model: str, as_json: bool, **kw: Any) -> None:
    """Run (or resume) an Optuna study over real engine launches; save the best profile.

    Arguments after `--` are passed to every engine launch unchanged."""
    from autotune.app import tune as api

    result = api.tune(tune_options(model, kw))
    if as_json:
        from autotune.app.views import print_tune_summary

        print_tune_summary(result)


@cli.command(cls=VllmFlagsCommand)
@click.argument("model", callback=model_id)
@hardware
@tuning
@goals
@click.option("--dry-run", is_flag=True, help="Print the command line instead of running it.")
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse flags after -- that override a tuned value or change memory or numerics "
    "(--kv-cache-dtype, --quantization, --dtype, -tp, ...) instead of warning.",
)
@click.option(
    "--pick",
    type=click.Choice(["throughput", "memory", "balanced"]),
    help="A Pareto profile's variant: the fastest, the smallest reservation, or balanced.",
)
@click.option("--no-tune", is_flag=True, help="Never tune: a missing profile is an error.")
@click.option(
    "--workload",
    "workload_sig",
    metavar="SIGNATURE",
    help="Choose the profile of this workload (e.g. in512-out128).",
)
@click.option(
    "--profile",
    "profile_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Serve with this profile file.",
)
def serve(
    model: str,
    dry_run: bool,
    no_tune: bool,
    workload_sig: str | None,
    profile_file: Path | None,
    pick: str | None,
    strict: bool,
    **kw: Any,
) -> None:
    """Exec vLLM with the saved profile for this model and hardware; tune first on a miss.

    vLLM's --max-model-len N and --max-num-seqs N ask for a profile with at least N,
    --gpu-memory-utilization V and --kv-cache-memory-bytes B for one reserving at most that
    (LOW:HIGH: within the range). Arguments after `--` are passed to vLLM unchanged; one that
    overrides a tuned value or changes memory or numerics is said (refused under --strict)."""
    from autotune.app.serve import serve

    ctx = click.get_current_context()
    asked = any(
        ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
        for name in WORKLOAD_OPTIONS
    )
    serve(
        tune_options(model, kw),
        dry_run=dry_run,
        no_tune=no_tune,
        workload=workload_sig,
        profile_file=profile_file,
        pick=pick,
        strict=strict,
        asked_workload=asked,
    )


@cli.command()
@click.argument("model", required=False, callback=model_id)
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the state dir).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_STATE_DIR]")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def trials(model: str | None, storage: str | None, state_dir: Path | None, as_json: bool) -> None:
    """List the trials of the studies (of MODEL): outcome, key metrics and log path."""
    from autotune.app import views as reports

    reports.print_trials(model=model, storage=storage, state_dir=state_dir, as_json=as_json)


@cli.command()
@click.argument("model", required=False, callback=model_id)
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the state dir).")
@click.option("--study", "study_name", metavar="NAME", help="The study (default: the newest).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_STATE_DIR]")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
    default="autotune-report.html", show_default=True, help="The HTML file to write.",
)  # fmt: skip
@click.option("--png", is_flag=True, help="Also write static PNG images beside it (matplotlib).")
def report(
    model: str | None,
    storage: str | None,
    study_name: str | None,
    state_dir: Path | None,
    output: Path,
    png: bool,
) -> None:
    """Write a self-contained HTML report of a study (of MODEL): trials with their outcomes,
    throughput against each parameter, history, importances, the Pareto front if any."""
    from autotune.app import views as reports

    written = reports.write_study_report(
        model=model, storage=storage, study_name=study_name, state_dir=state_dir, out=output,
        png=png,
    )  # fmt: skip
    for path in written:
        click.echo(str(path))


@cli.command()
@click.argument("model", callback=model_id)
@click.option("--gpu", metavar="NAME:MEMORY_GIB[xCOUNT]", help="The GPU, e.g. H100:80 [NVML].")
@click.option("--device", type=click.Choice(["auto", "gpu", "cpu"]), default="auto",
              show_default=True, help="cpu: vLLM's CPU backend, rows by KV cache bytes; auto: "
              "cpu when the vLLM to launch is a CPU build (+cpu).")  # fmt: skip
@click.option("--vllm-cmd", metavar="CMD", help="The vLLM that --device auto asks "
              "[env AUTOTUNE_VLLM_CMD, default: vllm serve].")  # fmt: skip
@click.option("--max-model-len", "request_len", type=click.IntRange(1, 1 << 24),
              help="Request length of the concurrency column [the model's maximum].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, callback=user_args)
def plan(model: str, as_json: bool, extra: tuple[str, ...], **kw: Any) -> None:
    """Predict memory without launching anything (no GPU needed): weights, KV bytes per token,
    and per utilization the KV cache tokens, the longest max_model_len and the concurrency.

    Engine flags after `--` count (--tensor-parallel-size, --kv-cache-dtype, --enforce-eager)."""
    from autotune.memory import plan as planning

    planning.run(model=model, extra_args=extra, as_json=as_json, **kw)


cli.add_command(profiles)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors are one line on stderr and exit 2, never a traceback."""
    logs.configure()
    args = sys.argv[1:] if argv is None else argv
    remember_args(args)  # `-- --api-key K`: K is masked in everything printed
    try:
        if any("\0" in arg for arg in args):  # no program can be given it (exec refuses)
            raise UserError("an argument has a NUL byte")
        cli.main(args=args, prog_name="autotune", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("autotune: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"autotune: error: {_one_line(mask(exc.format_message()))}", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"autotune: error: {_one_line(mask(str(exc)))}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        sys.exit(1)


def _one_line(message: str) -> str:
    """``message`` as one line: control characters the user typed are shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


if __name__ == "__main__":
    main()
