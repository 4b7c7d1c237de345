"""Opt-in dimensions (``--tune``): the space, the profile's checks and warnings, and a study on
the fake engine as a real process that searches the KV cache dtype."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autotune.engine.safety import check_profile_args
from autotune.engine.settings import FP8_WARNING, unchunked_too_short, warnings_for
from autotune.errors import UserError
from autotune.model import resolve_model
from autotune.profiles.export import vllm_config
from autotune.profiles.store import Profile
from autotune.search.opt_in import with_opt_in
from autotune.search.space import SearchSpace, parse_candidate
from autotune.search.space_build import build_space
from autotune.search.study import study_name
from tests.app.test_goals_fake import FAKE_ENV, SMALL
from tests.conftest import FAKE_CMD, run_autotune, write_model
from tests.search.test_space import L4

KV_BOUND = [  # everything fixed but the opt-in dimension; the KV cache limits the batch
    "--gpu", "L4:24", "--input-len", "256", "--output-len", "256", "--num-prompts", "128",
    "--gpu-memory-utilization", "0.13", "--max-num-seqs", "128",
    "--max-num-batched-tokens", "4096", "--max-model-len", "2048",
    "--repeats", "1", "--no-soak", "--quiet",
]  # fmt: skip


def space(*names: str, extra: tuple[str, ...] = ()) -> SearchSpace:
    base = build_space(spec=resolve_model("meta-llama/Llama-3.1-8B"), hardware=L4, overrides={})
    return with_opt_in(base, names, extra_args=extra)


def test_categorical_dimensions_sample_both_values_and_render_vllm_flags() -> None:
    s = space("kv-cache-dtype", "prefix-caching", "chunked-prefill")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: set[tuple[Any, ...]] = set()
    for _ in range(20):
        trial = study.ask()
        args = s.args(s.sample(trial))
        seen.add((args["kv_cache_dtype"], args["enable_prefix_caching"]))
        assert args["enable_chunked_prefill"] in (True, False)
        study.tell(trial, 1.0)
    assert {k for k, _ in seen} == {"auto", "fp8"}
    assert {p for _, p in seen} == {True, False}
    dist = study.trials[0].distributions["kv_cache_dtype"]
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    assert s.args(s.default_params({}))["kv_cache_dtype"] == "auto"  # vLLM's default first
    assert "kv_cache_dtype=auto|fp8" in s.describe()
    assert "enable_prefix_caching=true|false" in s.describe()


def test_opt_in_changes_the_study_name_and_is_never_there_by_default() -> None:
    plain, tuned = space(), space("kv-cache-dtype")
    assert "kv_cache_dtype" not in plain and "kv_cache_dtype" not in plain.args({})
    key = {"model": "m", "hardware_key": "h", "workload": "w", "objective": "throughput"}
    assert study_name(**key, space=plain) != study_name(**key, space=tuned)


def test_bad_opt_in_is_one_clear_error() -> None:
    with pytest.raises(UserError, match="--tune block-size: choose from kv-cache-dtype"):
        space("block-size")
    with pytest.raises(UserError, match="--no-enable-prefix-caching after --: --tune prefix"):
        space("prefix-caching", extra=("--no-enable-prefix-caching",))
    with pytest.raises(UserError, match=r"kv_cache_dtype is one of auto\|fp8"):
        parse_candidate(space("kv-cache-dtype"), "kv_cache_dtype=int4")
    assert parse_candidate(space("kv-cache-dtype"), "kv_cache_dtype=fp8") == {"kv_cache_dtype": 1}


def test_chunked_prefill_off_needs_a_batch_as_long_as_the_context() -> None:
    off = {"enable_chunked_prefill": False, "max_model_len": 8192}
    assert "max_num_batched_tokens (4096) >= max_model_len (8192)" in str(
        unchunked_too_short(off | {"max_num_batched_tokens": 4096})
    )
    assert unchunked_too_short(off | {"max_num_batched_tokens": 8192}) is None
    assert unchunked_too_short({**off, "enable_chunked_prefill": True}) is None


def test_profiles_accept_opt_in_values_and_warn_about_fp8() -> None:
    args = {"kv_cache_dtype": "fp8", "enable_prefix_caching": False}
    check_profile_args(args, [], source="p.yaml")
    with pytest.raises(UserError, match=r"vllm_args\.kv_cache_dtype = .int8. is outside"):
        check_profile_args({"kv_cache_dtype": "int8"}, [], source="p.yaml")
    with pytest.raises(UserError, match="true or false"):
        check_profile_args({"enable_prefix_caching": "yes"}, [], source="p.yaml")
    assert warnings_for((), vllm_args=[{"kv_cache_dtype": "auto"}, args]) == [FP8_WARNING]
    assert warnings_for((), vllm_args=[{"kv_cache_dtype": "auto"}]) == []
    profile = Profile(
        schema_version=2, model={"name": "m"}, hardware={"key": "h"}, vllm_version=None,
        workload={"signature": "w"}, objective="throughput", vllm_args=args, extra_args=[],
        metrics={}, startup={}, provenance={},
    )  # fmt: skip
    config = vllm_config(profile)  # a false switch is its --no- flag in vLLM's config file
    assert config == {"kv-cache-dtype": "fp8", "no-enable-prefix-caching": True}


def run_tune(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_autotune("tune", model, "--vllm-cmd", FAKE_CMD, *args, env=FAKE_ENV)


def trials() -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{Path(os.environ['AUTOTUNE_STATE_DIR']) / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage).trials


def trial_args(model: Path) -> list[dict[str, Any]]:
    return [t.user_attrs["vllm_args"] for t in trials()]


def kv_tokens() -> list[int]:
    return [t.user_attrs["startup"]["kv_cache_tokens"] for t in trials()]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_tune_kv_cache_dtype_on_the_fake_picks_fp8_with_a_warning(tmp_path: Path) -> None:
    model = write_model(tmp_path / "small", SMALL)
    done = run_tune(model, *KV_BOUND, "--trials", "3", "--tune", "kv-cache-dtype")
    assert done.returncode == 0, done.stderr
    assert {a["kv_cache_dtype"] for a in trial_args(model)} == {"auto", "fp8"}
    (path,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert profile["vllm_args"]["kv_cache_dtype"] == "fp8"  # twice the KV cache: more batched
    assert profile["warnings"] == [FP8_WARNING]
    kv = {a["kv_cache_dtype"]: t for a, t in zip(trial_args(model), kv_tokens(), strict=True)}
    assert abs(kv["fp8"] - 2 * kv["auto"]) <= 32  # the fake: an fp8 KV token in half the bytes
    served = run_autotune(
        "serve", model, "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--dry-run", "--no-tune",
        env=FAKE_ENV,
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert "--kv-cache-dtype fp8" in served.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_without_tune_the_kv_cache_dtype_never_appears(tmp_path: Path) -> None:
    model = write_model(tmp_path / "small", SMALL)
    done = run_tune(model, *KV_BOUND, "--trials", "2")
    assert done.returncode == 0, done.stderr
    assert all("kv_cache_dtype" not in a for a in trial_args(model))
    (path,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert "kv_cache_dtype" not in profile["vllm_args"] and profile["warnings"] == []
