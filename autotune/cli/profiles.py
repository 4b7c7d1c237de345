"""``autotune profiles``: list, show, export, verify and save profiles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from autotune.cli.options import hardware
from autotune.cli.params import floats, model_id, user_args


@click.group()
def profiles() -> None:
    """Saved profiles."""


@profiles.command("list")
@click.option("--profiles-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_PROFILES_DIR]")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def profiles_list(profiles_dir: Path | None, as_json: bool) -> None:
    """List saved profiles."""
    from autotune.app import views as reports

    reports.print_profiles(profiles_dir=profiles_dir, as_json=as_json)


@profiles.command("save")
@click.argument("model", required=False, callback=model_id)
@click.option("--from-study", is_flag=True, required=True,
              help="From the best trial of a study (one whose workers stopped early).")  # fmt: skip
@click.option("--study", "study_name", metavar="NAME", help="The study (default: the newest).")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the state dir).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_STATE_DIR]")
@click.option("--profiles-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_PROFILES_DIR]")
@click.option("--noise", type=floats("noise"), default=0.05, show_default=True,
              help="Results within this share of the best count as equal.")  # fmt: skip
def profiles_save(
    model: str | None,
    from_study: bool,
    study_name: str | None,
    storage: str | None,
    state_dir: Path | None,
    profiles_dir: Path | None,
    noise: float,
) -> None:
    """Save the profile of a study (of MODEL) that no worker finished."""
    from autotune.app.from_study import save_from_study

    path = save_from_study(
        model=model, storage=storage, study_name=study_name, state_dir=state_dir,
        profiles_dir=profiles_dir, noise=noise,
    )  # fmt: skip
    click.echo(str(path))


@profiles.command("show")
@click.argument("model", callback=model_id)
@hardware
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
def profiles_show(
    model: str,
    gpu: str | None,
    device: str,
    vllm_cmd: str | None,
    profiles_dir: Path | None,
    as_json: bool,
) -> None:
    """Show the profile serve would use for MODEL on this hardware."""
    from autotune.app import views as reports

    reports.show_profile(
        model=model,
        gpu=gpu,
        device=device,
        vllm_cmd=vllm_cmd,
        profiles_dir=profiles_dir,
        as_json=as_json,
    )


@profiles.command("export")
@click.argument("model", callback=model_id)
@hardware
@click.option(
    "--format", "fmt",
    type=click.Choice(["vllm-config", "cli", "json", "k8s", "helm-values", "kserve"]),
    default="vllm-config", show_default=True, help="What to write to stdout.",
)  # fmt: skip
@click.option("--image", metavar="REPO:TAG",
              help="k8s, helm-values, kserve: the image (default: the official vLLM image of the "
              "profile's vLLM release, the CPU image for a CPU profile).")  # fmt: skip
@click.option("--hf-cache-pvc", metavar="NAME",
              help="k8s, helm-values, kserve: a PersistentVolumeClaim for the Hugging Face cache "
              "(default: an emptyDir).")  # fmt: skip
@click.option("--hf-token-secret", metavar="NAME", default="hf-token", show_default=True,
              help="k8s, helm-values, kserve: the Secret whose key HF_TOKEN is the Hugging Face "
              "token (optional).")  # fmt: skip
def profiles_export(
    model: str,
    gpu: str | None,
    device: str,
    vllm_cmd: str | None,
    profiles_dir: Path | None,
    fmt: str,
    image: str | None,
    hf_cache_pvc: str | None,
    hf_token_secret: str,
) -> None:
    """Write the profile serve would use for MODEL as a vLLM config, command line, JSON, a
    Kubernetes Deployment and Service, production-stack Helm values or a KServe
    InferenceService."""
    from autotune.app import views as reports
    from autotune.profiles.export_k8s import ExportOptions

    options = ExportOptions(image=image, hf_cache_pvc=hf_cache_pvc, hf_token_secret=hf_token_secret)
    reports.export_profile(
        model=model, gpu=gpu, device=device, vllm_cmd=vllm_cmd, profiles_dir=profiles_dir, fmt=fmt,
        options=options,
    )  # fmt: skip


@profiles.command("verify", context_settings={"ignore_unknown_options": True})
@click.argument("model", callback=model_id)
@hardware
@click.option("--workload", "workload_sig", metavar="SIGNATURE", help="Verify this workload's.")
@click.option(
    "--profile",
    "profile_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Verify this profile file.",
)
@click.option(
    "--tolerance",
    type=floats("noise"),
    default=0.1,
    show_default=True,
    help="Largest accepted loss of output throughput or KV cache tokens (a fraction).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Runs; their median is compared.",
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="[env AUTOTUNE_STATE_DIR]")
@click.option("--startup-timeout", type=floats("startup_timeout_s"), default=900.0,
              show_default=True, help="Seconds.")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED, callback=user_args)
def profiles_verify(
    model: str,
    workload_sig: str | None,
    profile_file: Path | None,
    tolerance: float,
    repeats: int,
    extra: tuple[str, ...],
    **kw: Any,
) -> None:
    """Re-measure the profile serve would use on this machine, compare with its stored metrics
    and exit 1 when throughput or KV cache capacity dropped beyond the tolerance (after a vLLM
    or driver upgrade). Arguments after `--` go to vLLM."""
    from autotune.app.options import TuneOptions
    from autotune.app.verify import verify

    options = TuneOptions(
        model=model,
        gpu=kw["gpu"],
        device=kw["device"],
        vllm_cmd=kw["vllm_cmd"],
        profiles_dir=kw["profiles_dir"],
        state_dir=kw["state_dir"],
        startup_timeout_s=kw["startup_timeout"],
        quiet=kw["quiet"],
        extra_args=extra,
    )
    result = verify(
        options,
        workload=workload_sig,
        profile_file=profile_file,
        tolerance=tolerance,
        repeats=repeats,
    )
    if result.failure:
        click.echo(f"autotune: {result.failure}", err=True)
        sys.exit(1)
    click.echo(f"autotune: {result.held()}", err=True)
