"""The in-process ground truth of the fake engine (``autotune.testing.landscape``) against the
fake's own pieces, and its runner inside autotune's real study loop."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotune.engine.outcome import Outcome
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.search import study as st
from autotune.search.screen_rules import ClassScreen
from autotune.search.space import Dim, SearchSpace
from autotune.testing._fake_boot import plan_boot
from autotune.testing._fake_model import FakeEnv, ModelInfo, ServeConfig
from autotune.testing.landscape import FakeTruth, serve_jobs
from autotune.testing.landscape_runner import LandscapeRunner
from tests.app.test_tune_fake import PHASE_CLASS
from tests.conftest import LLAMA_8B, ROOT

LLAVA = json.loads((ROOT / "examples/llava-1.5-7b/config.json").read_text())
ENV = {"AUTOTUNE_FAKE_ACT_FACTOR": "96", "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24"}


def text_requests(n: int = 8, input_len: int = 64, output_len: int = 8) -> list[Request]:
    return build_requests(
        Workload(input_len=input_len, output_len=output_len), num_prompts=n, vocab_size=32000
    )


def oracle(args: dict[str, Any], env: dict[str, str]) -> str:
    """The class of plan_boot's failing phase (as tests/test_tune_fake.py judges launches)."""
    cfg = ServeConfig(
        util=args["gpu_memory_utilization"],
        max_num_seqs=args["max_num_seqs"],
        max_num_batched_tokens=args["max_num_batched_tokens"],
        max_model_len=args["max_model_len"],
    )
    boot = plan_boot(cfg, ModelInfo.from_config(LLAMA_8B), FakeEnv.from_environ(env))
    failed = next((p for p in boot.phases if p.error), None)
    if failed is None:
        return "ok"
    if failed.where == "_initialize_kv_caches":
        return "no_kv_cache" if "No available memory" in (failed.error or "") else "kv_too_small"
    return PHASE_CLASS[failed.where]


def test_outcomes_and_startup_numbers_match_the_fakes_memory_model() -> None:
    truth = FakeTruth(config=LLAMA_8B, env=ENV, requests=text_requests())
    seen = set()
    for util, seqs, mbt, length in itertools.product(
        (0.75, 0.85, 0.95, 0.97, 0.99), (8, 64, 256), (512, 4096, 16384), (2048, 65536)
    ):
        args: dict[str, Any] = {
            "gpu_memory_utilization": util,
            "max_num_seqs": seqs,
            "max_num_batched_tokens": mbt,
            "max_model_len": length,
        }
        result = truth.result(args, log_path=Path("x.log"))
        assert result.outcome.value == oracle(args, ENV), args
        seen.add(result.outcome)
        if result.outcome is Outcome.KV_TOO_SMALL:
            assert 0 < (result.estimated_max_model_len or 0) < length
        if result.outcome is Outcome.OK:
            assert result.startup.kv_cache_tokens and result.startup.kv_cache_tokens > length
            assert result.throughput > 0 and result.metrics and result.metrics.completed == 8
        else:
            assert result.throughput == 0.0 or result.outcome.infeasible
    assert {
        Outcome.OK,
        Outcome.OOM_PROFILING,
        Outcome.OOM_CUDA_GRAPHS,
        Outcome.KV_TOO_SMALL,
        Outcome.FREE_MEMORY,
    } <= seen


def test_flags_the_engine_rejects_are_invalid_configs() -> None:
    truth = FakeTruth(config=LLAMA_8B, env=ENV, requests=text_requests())
    base = {"gpu_memory_utilization": 0.9, "max_num_seqs": 64, "max_model_len": 4096}
    too_small = truth.result({**base, "max_num_batched_tokens": 32}, log_path=Path("x"))
    unknown = truth.result({**base, "no_such_flag": 1}, log_path=Path("x"))
    assert too_small.outcome is unknown.outcome is Outcome.INVALID_CONFIG
    assert "must be greater than or equal to max_num_seqs" in too_small.reason


def test_one_request_takes_a_prefill_step_then_one_step_per_token() -> None:
    # The fake's step time: (0.015 + 0.00025 x batch + 0.00001 x prefill tokens) x time scale.
    served = serve_jobs(
        [(100, 5, 5)], max_num_seqs=4, max_num_batched_tokens=512, capacity=10_000, time_scale=2.0
    )
    (times,) = served.token_times
    prefill, decode = 2 * (0.015 + 0.00025 + 0.001), 2 * (0.015 + 0.00025)
    assert times == pytest.approx([prefill + i * decode for i in range(5)])
    assert served.finished == (True,) and served.crashed is None


def test_feeding_requests_lazily_keeps_the_schedule() -> None:
    jobs = [(256, 16, 16)] * 40 + [(40, 3, 3)] * 20  # capacity binds: admission waits, preempts
    for seqs, mbt, capacity in [(8, 512, 10**6), (32, 300, 2000), (64, 2048, 5000)]:
        kw: dict[str, Any] = dict(
            max_num_seqs=seqs, max_num_batched_tokens=mbt, capacity=capacity, time_scale=1.0
        )
        assert serve_jobs(jobs, **kw) == serve_jobs(jobs, **kw, lazy=False)


def test_throughput_counts_every_token_over_the_benchmark() -> None:
    truth = FakeTruth(config=LLAMA_8B, env=ENV, requests=text_requests(n=16, output_len=8))
    args = {
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 4,
        "max_num_batched_tokens": 2048,
        "max_model_len": 4096,
    }
    metrics = truth.result(args, log_path=Path("x")).metrics
    assert metrics and metrics.output_tokens == 16 * 8 and metrics.failed == 0
    assert metrics.output_throughput == pytest.approx(128 / metrics.duration_s)
    wider = truth.throughput({**args, "max_num_seqs": 16})
    assert wider > metrics.output_throughput  # one batch of 16 instead of four of 4


def test_runtime_failures() -> None:
    crash = FakeTruth(
        config=LLAMA_8B,
        env={**ENV, "AUTOTUNE_FAKE_LOAD_OOM_UTIL": "0.85"},
        requests=text_requests(),
    )
    args = {
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 2048,
        "max_model_len": 4096,
    }
    assert crash.result(args, log_path=Path("x")).outcome is Outcome.CRASH_UNDER_LOAD
    assert (
        crash.result({**args, "gpu_memory_utilization": 0.8}, log_path=Path("x")).outcome
        is Outcome.OK
    )

    wl = Workload(input_len=16, output_len=4, images_per_request=(2, 2), image_size=(64, 64))
    vision = FakeTruth(
        config=LLAVA, env=ENV, requests=build_requests(wl, num_prompts=4, vocab_size=None)
    )
    vargs = {
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 2048,
        "max_model_len": 4096,
    }
    one = vision.result({**vargs, "limit_mm_per_prompt": '{"image": 1}'}, log_path=Path("x"))
    two = vision.result({**vargs, "limit_mm_per_prompt": '{"image": 2}'}, log_path=Path("x"))
    assert one.outcome is Outcome.IMAGE_LIMIT and two.outcome is Outcome.OK
    assert two.startup.profiled_images == 3  # 2048 // 576 dummy images, as vLLM's log says
    assert two.metrics and two.metrics.input_tokens == 4 * (16 + 4 + 2 * 576)


def test_the_runner_drives_autotunes_study_loop(tmp_path: Path) -> None:
    truth = FakeTruth(config=LLAMA_8B, env=ENV, requests=text_requests())
    space = SearchSpace(
        dims=(
            Dim("gpu_memory_utilization", 0.80, 0.99, is_float=True),
            Dim("max_num_seqs", 8, 256, log=True),
            Dim("max_num_batched_tokens", 512, 16384, log=True),
            Dim("max_model_len", 2048, 2048),
        )
    )
    study = st.open_study(name="landscape", storage=f"sqlite:///{tmp_path / 's.db'}", seed=3)
    defaults = {
        "gpu_memory_utilization": 0.99,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 16384,
    }
    plan = st.StudyPlan(
        study=study,
        space=space,
        runner=LandscapeRunner(truth=truth, write_logs=True),
        budget=8,
        log_dir=tmp_path / "logs",
        default_params=defaults,
        prescreen=ClassScreen(image_tokens=None),
    )

    class Quiet:
        def trial_started(self, **_: Any) -> None: ...
        def phase(self, text: str) -> None: ...
        def trial_finished(self, trial: Any) -> None: ...
        def trial_skipped(self, trial: Any) -> None: ...

    st.run_study(plan, reporter=Quiet())
    launched = [t for t in study.get_trials() if t.user_attrs.get("launched")]
    assert len(launched) == 8
    assert launched[0].user_attrs["outcome"] == "insufficient_free_memory"  # 0.99 of 24 GiB
    for t in launched:
        args = t.user_attrs["vllm_args"]
        assert t.user_attrs["outcome"] == oracle(args, ENV)
        assert Path(t.user_attrs["log"]).read_text().count("vLLM API server version") == 1
        if t.user_attrs["outcome"] == "ok":
            assert t.value is not None and t.value > 0
            assert t.value == pytest.approx(truth.throughput(args))
            assert t.user_attrs["startup"]["kv_cache_tokens"] > 0
        else:
            assert t.state is optuna.trial.TrialState.COMPLETE and t.constraints["infeasible"] > 0
