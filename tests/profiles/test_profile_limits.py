"""Profiles tuned under other limits (SLOs, throughput floor, memory budget) are other files,
and ``serve`` given limits uses only a profile tuned under exactly those."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

from autotune.hardware import parse_gpu_spec
from autotune.model import ModelSpec
from autotune.profiles.match import describe_miss, find_profile
from autotune.profiles.store import ProfileStore
from tests.conftest import run_autotune
from tests.profiles.test_store import make

L4 = parse_gpu_spec("L4:24", source="flag")
SPEC = ModelSpec(model_id="m", known=False)
FAST_TTFT = {"ttft_p95_ms": 200.0}
BUDGET = {"memory_budget": 0.5, "memory_budget_gib": 12.0}


def test_other_limits_never_overwrite_one_profile(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    plain = store.save(make("2026-01-01", max_num_seqs=1))
    fast = store.save(replace(make("2026-01-02", max_num_seqs=2), constraints=FAST_TTFT))
    slow = store.save(replace(make("2026-01-03", max_num_seqs=3), constraints={"ttft_p95_ms": 500}))
    floor = store.save(
        replace(make("2026-01-04", max_num_seqs=4), constraints={"min_throughput": 9})
    )
    budget = store.save(replace(make("2026-01-05", max_num_seqs=5), constraints=BUDGET))
    assert len({plain, fast, slow, floor, budget}) == 5
    assert plain.name == "in512-out128--throughput--vllm-0.33.0.yaml"  # no limits: the old name
    assert "--limits-" in fast.name and fast.name.endswith("--vllm-0.33.0.yaml")
    again = replace(make("2026-01-06", max_num_seqs=6), constraints=FAST_TTFT)
    assert store.save(again) == fast  # the same limits: the newer profile replaces it
    other_gpu = replace(make("2026-01-07"), constraints=BUDGET | {"memory_budget_gib": 40.0})
    assert store.path_for(other_gpu) == budget  # GiB derived from the share: not part of the key


def test_serve_with_limits_uses_only_a_profile_tuned_under_them(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    store.save(replace(make("2026-01-01", max_num_seqs=1), constraints=FAST_TTFT))
    store.save(make("2026-01-02", max_num_seqs=2))
    newest = find_profile(store=store, spec=SPEC, hardware=L4)
    assert newest and newest.profile.vllm_args["max_num_seqs"] == 2 and newest.others == 1
    fast = find_profile(store=store, spec=SPEC, hardware=L4, limits=FAST_TTFT)
    assert fast and fast.profile.vllm_args["max_num_seqs"] == 1 and fast.others == 0
    wanted = {"ttft_p95_ms": 100.0}
    assert find_profile(store=store, spec=SPEC, hardware=L4, limits=wanted) is None
    miss = describe_miss(store=store, spec=SPEC, hardware=L4, workload=None, limits=wanted)
    assert "ttft_p95_ms 100.0" in miss


def test_serve_slo_option_picks_the_matching_profile(model_dir: Path) -> None:
    store = ProfileStore(Path(os.environ["AUTOTUNE_PROFILES_DIR"]))
    model = {"id": str(model_dir), "name": "llama-8b"}
    store.save(replace(make("2026-01-01", max_num_seqs=11), model=model, constraints=FAST_TTFT))
    store.save(replace(make("2026-01-02", max_num_seqs=22), model=model))
    env = {"AUTOTUNE_VLLM_CMD": "no-such-vllm serve"}

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return run_autotune(
            "serve", model_dir, "--gpu", "L4:24", "--dry-run", "--no-tune", *args,
            env=env, timeout=60,
        )  # fmt: skip

    assert "--max-num-seqs 22" in serve().stdout
    assert "--max-num-seqs 11" in serve("--slo", "ttft_p95_ms=200").stdout
    missed = serve("--slo", "ttft_p95_ms=100")
    assert missed.returncode != 0 and "ttft_p95_ms 100.0" in missed.stderr
