"""The generated scenario family (``autotune.testing.scenarios``) and the fake-engine knobs it
draws: step costs, CUDA-graph memory, unprofiled runtime memory and per-launch noise."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from autotune.engine.outcome import Outcome
from autotune.load.workload import Workload, build_requests
from autotune.model import resolve_model
from autotune.testing._fake_boot import plan_boot
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig, speed_factor
from autotune.testing.landscape import FakeTruth
from autotune.testing.landscape_runner import LandscapeRunner
from autotune.testing.scenarios import DEV_SIZE, EVAL_SIZE, SPLIT_SEED, draw, split
from tests.conftest import LLAMA_8B

ARGS: dict[str, Any] = {
    "gpu_memory_utilization": 0.9,
    "max_num_seqs": 16,
    "max_num_batched_tokens": 2048,
    "max_model_len": 4096,
}


def truth(env: dict[str, str], *, n: int = 16) -> FakeTruth:
    wl = Workload(input_len=64, output_len=16)
    return FakeTruth(
        config=LLAMA_8B, env=env, requests=build_requests(wl, num_prompts=n, vocab_size=32000)
    )


def test_the_split_is_fixed_by_its_seed_and_keeps_the_sets_apart() -> None:
    dev, ev = split()
    assert len(dev) == DEV_SIZE <= 10 and len(ev) == EVAL_SIZE >= 30
    assert split() == (dev, ev)  # the same seed, the same scenarios
    assert {s.key for s in dev}.isdisjoint({s.key for s in ev})
    configs = [json.dumps(s.config, sort_keys=True) for s in (*dev, *ev)]
    assert len(set(configs)) == len(configs)  # distinct draws, none duplicated across sets
    other = split(SPLIT_SEED + 7)
    assert [s.config for s in other[1]] != [s.config for s in ev]


@pytest.mark.parametrize("seed", range(12))
def test_a_drawn_scenario_is_within_the_ranges_and_readable(seed: int, tmp_path: Path) -> None:
    s = draw(random.Random(seed), key="x")
    env = FakeEnv.from_environ(s.env)
    info = ModelInfo.from_config(s.config)
    weights = info.params() * 2 / 2**30
    assert 0.29 <= weights / env.total <= 0.93
    assert 0.0 <= env.noise <= 0.3
    assert env.step_fixed_ms > 0 and env.step_token_us > 0 and env.step_kv_ms > 0
    assert env.used + weights < env.total
    (tmp_path / "config.json").write_text(json.dumps(s.config))
    spec = resolve_model(str(tmp_path))  # autotune reads the model the fake serves
    assert spec.num_layers == info.layers and spec.is_vision == info.is_vision
    assert s.workload.num_prompts and s.workload.input_len + s.workload.output_len < 32768


def test_step_costs_set_the_throughput() -> None:
    base = truth({}).throughput(ARGS)
    slower = truth({"AUTOTUNE_FAKE_STEP_FIXED_MS": "30"}).throughput(ARGS)
    assert base > 0 and slower < base
    # attention reads grow with context: a long-context cost lowers throughput further
    reads = truth({"AUTOTUNE_FAKE_STEP_KV_MS": "5"}).throughput(ARGS)
    assert reads < base


def test_graph_memory_per_captured_size_decides_the_cuda_graph_phase() -> None:
    cfg = ServeConfig(util=0.9, max_num_seqs=256, max_num_batched_tokens=8192, max_model_len=4096)
    model = ModelInfo.from_config(LLAMA_8B)
    small = plan_boot(cfg, model, FakeEnv.from_environ({"AUTOTUNE_FAKE_GRAPH_MIB": "1"}))
    huge = plan_boot(cfg, model, FakeEnv.from_environ({"AUTOTUNE_FAKE_GRAPH_MIB": "400"}))
    assert not any(p.error for p in small.phases)
    assert [p.where for p in huge.phases if p.error] == ["profile_cudagraph_memory"]


def test_unprofiled_runtime_memory_kills_big_batches_near_the_top() -> None:
    t = truth({"AUTOTUNE_FAKE_LOAD_MIB_PER_KTOKEN": "800"}, n=32)
    high = {**ARGS, "gpu_memory_utilization": 0.95, "max_num_seqs": 32}
    assert t.result(high, log_path=Path("x")).outcome is Outcome.CRASH_UNDER_LOAD
    # the same batch at a lower utilization leaves room outside the KV cache
    lower = {**high, "gpu_memory_utilization": 0.8}
    assert t.result(lower, log_path=Path("x")).outcome is Outcome.OK
    # and fewer sequences at the top fit too
    assert t.result({**high, "max_num_seqs": 2}, log_path=Path("x")).outcome is Outcome.OK


def test_a_launch_speed_stays_within_the_noise() -> None:
    rng = random.Random(5)
    for noise in (0.0, 0.01, 0.1, 0.3):
        factors = [speed_factor(noise, rng) for _ in range(2000)]
        assert all(1 - noise - 1e-12 <= f <= 1 + noise + 1e-12 for f in factors)
        if noise:  # slow outliers, down to the bound
            assert min(factors) < 1 - noise / 2 and max(factors) > 1


def test_noisy_runs_vary_around_the_exact_truth() -> None:
    t = truth({"AUTOTUNE_FAKE_NOISE": "0.3"})
    runner = LandscapeRunner(truth=t, seed=1)
    seen = [
        runner.run(args=ARGS, log_path=Path("x"), on_phase=lambda _: None).throughput
        for _ in range(20)
    ]
    exact = t.throughput(ARGS)
    assert len(set(seen)) == 20 and min(seen) < exact < max(seen)
    assert all(0.7 * exact - 1e-9 <= v <= 1.3 * exact + 1e-9 for v in seen)
    again = LandscapeRunner(truth=t, seed=1)
    assert again.run(args=ARGS, log_path=Path("x"), on_phase=lambda _: None).throughput == seen[0]


def test_the_truth_reports_what_vllm_metrics_would_show() -> None:
    t = truth({}, n=64)
    roomy = t.result({**ARGS, "max_num_seqs": 8}, log_path=Path("x"))
    assert roomy.preemptions == 0 and roomy.peak_requests_running == 8
    assert roomy.peak_kv_cache_usage_pct is not None and roomy.peak_kv_cache_usage_pct < 5
    assert roomy.peak_requests_waiting == 64  # all sent at once
    # a KV cache of 13 blocks (208 tokens) for 64 requests of 80: full, with preemptions
    small = {"max_num_seqs": 64, "max_model_len": 128, "kv_cache_memory_bytes": 26 * 2**20}
    tight = t.result({**ARGS, **small}, log_path=Path("x"))
    assert tight.outcome is Outcome.OK, tight.reason
    assert tight.peak_kv_cache_usage_pct is not None and tight.peak_kv_cache_usage_pct > 90
    assert tight.preemptions and tight.preemptions > 0


def test_the_runtime_memory_limit_binds_through_the_kv_cache_not_max_num_seqs() -> None:
    # a limit far below what 256 sequences could hold, but above one request: both batch
    # sizes fill the same KV cache, so both die under load
    t = truth({"AUTOTUNE_FAKE_LOAD_MIB_PER_KTOKEN": "2000"}, n=64)
    args = {**ARGS, "gpu_memory_utilization": 0.93}
    small = t.result({**args, "max_num_seqs": 32}, log_path=Path("x"))
    large = t.result({**args, "max_num_seqs": 256}, log_path=Path("x"))
    assert small.outcome is Outcome.CRASH_UNDER_LOAD
    assert large.outcome is Outcome.CRASH_UNDER_LOAD
