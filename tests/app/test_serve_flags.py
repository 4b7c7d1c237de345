"""``serve`` speaks vLLM: its flags as options choose the profile, after ``--`` they override it
with a warning (refused under ``--strict``), and a workload other than the one asked is said."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autotune.app.serve_args import Requirement, requirements, review_extra
from autotune.errors import UserError
from autotune.profiles.store import ProfileStore
from tests.conftest import run_autotune
from tests.profiles.test_store import make

NO_VLLM = {"AUTOTUNE_VLLM_CMD": "no-such-vllm serve"}  # dry runs match without a version


def save(model_dir: Path, created: str, workload: str = "in512-out128", **args: Any) -> Path:
    store = ProfileStore(Path(os.environ["AUTOTUNE_PROFILES_DIR"]))
    model = {"id": str(model_dir), "name": model_dir.name}
    return store.save(replace(make(created, workload, **args), model=model))


def serve(model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_autotune(
        "serve", model_dir, "--gpu", "L4:24", "--dry-run", "--no-tune", *args,
        env=NO_VLLM, timeout=60,
    )  # fmt: skip


def flag(done: subprocess.CompletedProcess[str], name: str) -> str:
    argv = shlex.split(done.stdout.strip())
    assert argv.count(name) == 1, argv
    return argv[argv.index(name) + 1]


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_max_model_len_without_dashdash_chooses_a_long_enough_profile(model_dir: Path) -> None:
    save(model_dir, "2026-01-01", workload="in64-out32", max_model_len=32640)
    save(model_dir, "2026-01-02", workload="in128-out32", max_model_len=4096)  # newer, shorter
    assert flag(serve(model_dir), "--max-model-len") == "4096"  # the newest, nothing asked
    done = serve(model_dir, "--max-model-len", "8192")
    assert done.returncode == 0, done.stderr
    assert flag(done, "--max-model-len") == "32640"
    assert "max_model_len >= 8192 asked: the profile serves max_model_len 32640" in done.stderr
    too_long = serve(model_dir, "--max-model-len", "65536")
    assert too_long.returncode == 2 and "Traceback" not in too_long.stderr
    assert "no profile for" in last_line(too_long)
    assert "max_model_len >= 65536" in last_line(too_long)


def test_memory_and_concurrency_flags_choose_too(model_dir: Path) -> None:
    save(model_dir, "2026-01-01", workload="in64-out32", gpu_memory_utilization=0.8)
    save(model_dir, "2026-01-02", gpu_memory_utilization=0.95, max_num_seqs=256)
    assert flag(serve(model_dir, "--max-num-seqs", "128"), "--max-num-seqs") == "256"
    capped = serve(model_dir, "--gpu-memory-utilization", "0.85")
    assert flag(capped, "--gpu-memory-utilization") == "0.8"
    ranged = serve(model_dir, "--max-num-seqs", "32:128")
    assert flag(ranged, "--max-num-seqs") == "64"


def test_a_value_that_cannot_choose_says_how_to_pass_it(model_dir: Path) -> None:
    save(model_dir, "2026-01-01")
    done = serve(model_dir, "--max-num-batched-tokens", "8192")
    assert done.returncode == 2 and done.stdout == ""
    assert "-- --max-num-batched-tokens 8192" in last_line(done)
    unknown = serve(model_dir, "--port", "8001")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "has no option --port" in last_line(unknown)
    assert "-- --port 8001" in last_line(unknown)
    secret = serve(model_dir, "--api-key", "sk-abcdef123456")
    assert "-- --api-key" in last_line(secret) and "sk-abc" not in secret.stderr
    assert "did you mean" not in last_line(secret)  # a vLLM flag: no autotune look-alike
    typo = serve(model_dir, "--max-num-seq", "8")
    assert "did you mean --max-num-seqs?" in last_line(typo)


def test_kv_cache_dtype_after_dashdash_warns_or_is_refused_under_strict(model_dir: Path) -> None:
    save(model_dir, "2026-01-01")
    done = serve(model_dir, "--", "--kv-cache-dtype", "fp8")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("--kv-cache-dtype fp8")
    assert "--kv-cache-dtype fp8 after --: the profile was measured without it" in done.stderr
    strict = serve(model_dir, "--strict", "--", "--kv-cache-dtype", "fp8")
    assert strict.returncode == 2 and strict.stdout == ""
    assert "--strict" in last_line(strict) and "--kv-cache-dtype fp8" in last_line(strict)
    for numerics in (["--quantization", "fp8"], ["--dtype", "half"]):
        said = serve(model_dir, "--", *numerics)
        assert said.returncode == 0 and "measured without it" in said.stderr, said.stderr


def test_tuned_flag_after_dashdash_overrides_once_with_a_warning(model_dir: Path) -> None:
    save(model_dir, "2026-01-01")  # max_num_seqs 64
    done = serve(model_dir, "--", "--max-num-seqs", "10")
    assert done.returncode == 0, done.stderr
    assert flag(done, "--max-num-seqs") == "10"  # given once: the user's
    assert "overrides the profile's tuned max_num_seqs 64" in done.stderr
    same = serve(model_dir, "--", "--max-num-seqs", "64")
    assert flag(same, "--max-num-seqs") == "64" and "overrides" not in same.stderr
    strict = serve(model_dir, "--strict", "--", "--max_num_seq", "10")  # vLLM's spellings too
    assert strict.returncode == 2 and "max_num_seqs 64" in last_line(strict)


def test_workload_that_differs_from_the_asked_one_is_said(model_dir: Path) -> None:
    save(model_dir, "2026-01-01", workload="in64-out32")
    done = serve(model_dir, "--input-len", "128")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "in128-out128" in line]
    assert len(said) == 1 and "in64-out32" in said[0], done.stderr
    save(model_dir, "2026-01-02", workload="in512-out128")  # newer, not the asked workload
    save(model_dir, "2025-12-01", workload="in128-out128", max_num_seqs=7)
    chosen = serve(model_dir, "--input-len", "128")
    assert flag(chosen, "--max-num-seqs") == "7"  # the asked workload's profile comes first
    assert "serving workload" not in chosen.stderr
    quiet = serve(model_dir)  # nothing asked: the newest, no workload line
    assert "serving workload" not in quiet.stderr


def test_requirements_read_values_and_ranges() -> None:
    (at_least,) = requirements({"max_model_len": "8192", "max_num_seqs": None})
    assert at_least == Requirement("max_model_len", 8192, None)
    assert at_least.met({"max_model_len": 8192}) and not at_least.met({"max_model_len": 4096})
    assert not at_least.met({})  # a profile that does not say cannot promise it
    (at_most,) = requirements({"kv_cache_memory_bytes": "2G"})
    assert at_most.met({"kv_cache_memory_bytes": 1 << 30})
    assert not at_most.met({"kv_cache_memory_bytes": 3 << 30})
    (images,) = requirements({"image_limit": "2"})
    assert images.met({"limit_mm_per_prompt": '{"image": 4}'})
    assert not images.met({"limit_mm_per_prompt": '{"image": 1}'})
    with pytest.raises(UserError, match="LOW:HIGH"):
        requirements({"max_num_batched_tokens": "8192"})


def test_review_extra_keeps_what_the_profile_was_tuned_with() -> None:
    profile = replace(make("2026-01-01"), extra_args=["--kv-cache-dtype", "fp8"])
    assert review_extra(profile, ["--kv-cache-dtype", "fp8"], strict=True) == profile
    with pytest.raises(UserError, match="measured with --kv-cache-dtype fp8"):
        review_extra(profile, ["--kv-cache-dtype=auto"], strict=True)
    tp2 = replace(profile, parallel={"tensor_parallel_size": 2, "pipeline_parallel_size": 1})
    assert review_extra(tp2, ["-tp", "2"], strict=True) == tp2  # matched under that size
    overridden = review_extra(profile, ["--gpu-memory-utilization", "0.5"], strict=False)
    assert "gpu_memory_utilization" not in overridden.vllm_args
    assert overridden.vllm_args["max_num_seqs"] == 64
