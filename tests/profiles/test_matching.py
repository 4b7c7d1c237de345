"""serve's profile matching: exact vLLM release, compatible patch release, or none."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from autotune.hardware import parse_gpu_spec
from autotune.model import ModelSpec
from autotune.profiles.match import describe_miss, find_profile
from autotune.profiles.store import ProfileStore
from tests.conftest import run_autotune
from tests.profiles.test_store import make

L4 = parse_gpu_spec("L4:24", source="flag")
SPEC = ModelSpec(model_id="m", known=False)  # name "m", as in make()


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    store = ProfileStore(tmp_path)
    store.save(replace(make("2026-01-01", max_num_seqs=11), vllm_version="0.33.0"))
    store.save(replace(make("2026-01-02", max_num_seqs=22), vllm_version="0.33.1"))
    store.save(replace(make("2026-01-03", max_num_seqs=33), vllm_version="0.32.0"))
    return store


def test_exact_release_wins_over_newer_profiles(store: ProfileStore) -> None:
    match = find_profile(store=store, spec=SPEC, hardware=L4, vllm_version="0.33.0")
    assert match and match.how == "exact" and match.profile.vllm_args["max_num_seqs"] == 11
    cpu = find_profile(store=store, spec=SPEC, hardware=L4, vllm_version="0.32.0+cpu")
    assert cpu and cpu.how == "exact" and cpu.profile.vllm_args["max_num_seqs"] == 33


def test_other_patch_release_is_compatible(store: ProfileStore) -> None:
    match = find_profile(store=store, spec=SPEC, hardware=L4, vllm_version="0.33.4")
    assert match and match.how == "compatible" and match.profile.vllm_version == "0.33.1"


def test_other_minor_release_or_gpu_is_a_miss(store: ProfileStore) -> None:
    assert find_profile(store=store, spec=SPEC, hardware=L4, vllm_version="0.34.0") is None
    a100 = parse_gpu_spec("A100:80", source="flag")
    assert find_profile(store=store, spec=SPEC, hardware=a100, vllm_version="0.33.0") is None
    miss = describe_miss(store=store, spec=SPEC, hardware=L4, workload=None, vllm_version="0.34.0")
    assert "vLLM 0.34.x" in miss and "vLLM 0.33.1" in miss and "l4-24gib-x1" in miss


def test_unknown_version_matches_without_it(store: ProfileStore) -> None:
    match = find_profile(store=store, spec=SPEC, hardware=L4, vllm_version=None)
    assert match and match.how == "unversioned" and match.others == 2


def test_dry_run_without_vllm_says_so(tmp_path: Path, model_dir: Path) -> None:
    store = ProfileStore(Path(os.environ["AUTOTUNE_PROFILES_DIR"]))
    store.save(replace(make("2026-01-01"), model={"id": str(model_dir), "name": "llama-8b"}))
    env = {"AUTOTUNE_VLLM_CMD": "no-such-vllm serve"}  # not installed here
    done = run_autotune("serve", str(model_dir), "--gpu", "L4:24", "--dry-run", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"no-such-vllm serve {model_dir} ")
    assert "matched without it" in done.stderr


def test_other_config_json_is_a_miss_that_says_why(store: ProfileStore) -> None:
    """Same model name, another config.json (re-quantized, new revision): not used."""
    tuned = replace(SPEC, known=True, config_hash="aaaaaaaaaaaa")
    store.save(
        replace(
            make("2026-02-01", max_num_seqs=44),
            model={"id": "m", "name": "m", "config_hash": "aaaaaaaaaaaa"},
        )
    )
    hit = find_profile(store=store, spec=tuned, hardware=L4, vllm_version="0.33.0")
    assert hit and hit.profile.vllm_args["max_num_seqs"] == 44
    changed = replace(tuned, config_hash="bbbbbbbbbbbb")
    match = find_profile(store=store, spec=changed, hardware=L4, vllm_version="0.33.0")
    # the hashed profile replaced the 0.33.0 one (same file); profiles without a hash still fit
    assert match and match.how == "compatible" and match.profile.vllm_args["max_num_seqs"] == 22
    only_hashed = ProfileStore(store.root / "hashed")
    only_hashed.save(replace(make("2026-02-01"), model={"name": "m", "config_hash": "aaaa"}))
    assert find_profile(store=only_hashed, spec=changed, hardware=L4, vllm_version=None) is None
    miss = describe_miss(store=only_hashed, spec=changed, hardware=L4, workload=None)
    assert "config aaaa, not bbbbbbbbbbbb" in miss


def test_tensor_parallel_size_set_by_the_user_must_match(store: ProfileStore) -> None:
    store.save(
        replace(
            make("2026-03-01", max_num_seqs=55),
            parallel={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
        )
    )
    newest = find_profile(store=store, spec=SPEC, hardware=L4, vllm_version=None)
    assert newest and newest.profile.vllm_args["max_num_seqs"] == 55  # TP not given: newest
    tp1 = find_profile(
        store=store, spec=SPEC, hardware=L4, vllm_version=None, parallel={"tensor_parallel_size": 1}
    )
    assert tp1 and tp1.profile.vllm_args["max_num_seqs"] == 33
    tp4 = {"tensor_parallel_size": 4}
    assert find_profile(store=store, spec=SPEC, hardware=L4, parallel=tp4) is None
    miss = describe_miss(store=store, spec=SPEC, hardware=L4, workload=None, parallel=tp4)
    assert "tensor_parallel_size 4" in miss and "tensor_parallel_size 2" in miss
