"""A 20-launch study on the fake engine (real processes) whose startup-failure region covers about
a third of the space: after the 5th launch at most 2 launches fail at startup, every candidate the
pre-screen rejects fails in the fake's own memory model, and the KV cache predictions made before
each launch match what the engine then reported."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest

from autotune.hardware import Hardware
from autotune.model import resolve_model
from autotune.search.space_build import build_space
from tests.conftest import FAKE_CMD, LLAMA_8B, run_autotune
from tests.fake_truth import boots
from tests.search.test_screen import draws

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAKE_ENV = {
    "AUTOTUNE_FAKE_STARTUP_S": "0.2",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
    "AUTOTUNE_FAKE_ACT_FACTOR": "96",  # profiling OOM at large batches, no KV cache below them
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
}
RANGES = {"gpu_memory_utilization": "0.80:0.95", "max_num_seqs": "8:256",
          "max_model_len": "2048:16384"}  # fmt: skip


def test_twenty_launches_learn_the_failure_region(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    l4 = Hardware(gpu_name="L4", memory_gib=24)
    space = build_space(spec=spec, hardware=l4, overrides=RANGES)
    grid = draws(space, 1500, seed=0)  # the sampler's own distribution over the space
    failing = sum(not boots(a, config=LLAMA_8B, env=FAKE_ENV) for a in grid) / len(grid)
    assert 0.25 <= failing <= 0.42, failing  # about a third of the space cannot start

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in RANGES.items()]
    done = run_autotune(
        "tune", str(model_dir), "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", *flags,
        "--trials", "20", "--input-len", "128", "--output-len", "16", "--num-prompts", "48",
        "--seed", "3", "--quiet", env=FAKE_ENV, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    storage = f"sqlite:///{Path(os.environ['AUTOTUNE_STATE_DIR']) / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    launched = [t for t in trials if t.user_attrs.get("launched")]
    assert len(launched) == 20
    # startup failures after the 5th launch (a served trial pruned as slow, which depends on
    # how loaded the machine is, is not one)
    served = ("ok", "pruned", "crash_under_load", "request_errors")
    late = [t.user_attrs["outcome"] for t in launched[5:] if t.user_attrs["outcome"] not in served]
    assert len(late) <= 2, late

    for t in trials:  # never rejects a configuration that would have started
        if t.user_attrs["outcome"] == "skipped":
            assert t.state == optuna.trial.TrialState.COMPLETE and t.constraints["infeasible"] > 0
            assert not boots(t.user_attrs["vllm_args"], config=LLAMA_8B, env=FAKE_ENV), t

    for t in launched:  # predicted before the launch; after the first few launches, within 5%
        assert t.user_attrs["predicted_kv_cache_tokens"] is not None
    ok = [t for t in launched[3:] if t.user_attrs["outcome"] == "ok"]
    assert ok
    for t in ok:
        actual = t.user_attrs["startup"]["kv_cache_tokens"]
        assert abs(t.user_attrs["predicted_kv_cache_tokens"] / actual - 1) <= 0.05, t.user_attrs
