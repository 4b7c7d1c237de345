"""Capacity under SLOs against the fake engine as a real process: the rate search finds the
fake's known saturation rate (within 10%), and ``tune --objective capacity`` saves it.

The fake's step model (``testing._fake_model.FakeEnv.step_seconds``, noise 0, time scale 1): a
step of ``batch`` running sequences that prefills ``tokens`` takes ``fixed + seq * batch +
token * tokens``. A request of ``P`` prompt tokens and ``O`` output tokens holds its slot for
exactly ``O`` steps (its prefill step emits the first token, then ``O - 1`` decode steps). Past
saturation all ``B = max_num_seqs`` slots are busy, so ``B`` requests finish every ``O`` steps,
and each request's prompt is prefilled once. The time per finished request is therefore
``(O / B) * (fixed + seq * B) + P * token``, and the saturation rate is its inverse.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.engine.outcome import Outcome
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.trial.rate_search import CapacitySearch
from autotune.trial.runner import TrialRunner
from tests.conftest import FAKE_CMD, run_autotune, write_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
REQUESTS = 80  # per rate step


def saturation_rate(*, seqs: int, out: int, prompt: int, fixed_ms: float, seq_ms: float,
                    token_us: float) -> float:  # fmt: skip
    """Requests/s at full batch (see the module)."""
    per_request_s = out / seqs * (fixed_ms + seq_ms * seqs) / 1e3 + prompt * token_us / 1e6
    return 1 / per_request_s


# max_num_seqs, output, prompt, step: fixed ms, per sequence ms, per prefilled token us
SCENARIOS = {
    "batch8-decode": (8, 8, 32, 50.0, 1.0, 10.0),
    "batch16-long-steps": (16, 12, 64, 60.0, 0.5, 20.0),
    "batch4-prefill-heavy": (4, 6, 256, 40.0, 2.0, 60.0),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_capacity_found_is_the_fakes_saturation_rate(
    name: str, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seqs, out, prompt, fixed, per_seq, per_token = SCENARIOS[name]
    known = saturation_rate(
        seqs=seqs, out=out, prompt=prompt, fixed_ms=fixed, seq_ms=per_seq, token_us=per_token
    )
    for key, value in {"STARTUP_S": 0.2, "GPU_MEMORY_GIB": 24, "STEP_FIXED_MS": fixed,
                       "STEP_SEQ_MS": per_seq, "STEP_TOKEN_US": per_token}.items():  # fmt: skip
        monkeypatch.setenv(f"AUTOTUNE_FAKE_{key}", str(value))
    # A loose SLO: far above the unloaded TTFT (one step and a prefill, under 0.15 s), far below
    # what a queue growing through a step just past saturation gives (its latest requests wait
    # about (1 - known / rate) * REQUESTS / known s, and keep growing with the rate).
    limit_ms = 0.1 * REQUESTS / known * 1000
    workload = Workload(input_len=prompt, output_len=out)
    steps: list[int] = []

    def requests_for(step: int, count: int) -> list[Request]:
        steps.append(step)
        wl = replace(workload, seed=100 + step)
        return build_requests(wl, num_prompts=count, vocab_size=32000)

    runner = TrialRunner(
        command=shlex.split(FAKE_CMD), model=str(model_dir), requests=(), startup_timeout_s=60,
        capacity=CapacitySearch(slos={"ttft_ms_p95": limit_ms}, requests_for=requests_for,
                                num_prompts=REQUESTS),
    )  # fmt: skip
    args = {"gpu_memory_utilization": 0.9, "max_num_seqs": seqs, "max_model_len": 2048,
            "max_num_batched_tokens": 8192}  # fmt: skip
    result = runner.run(args=args, log_path=tmp_path / "t.log", on_phase=lambda _: None)
    assert result.outcome is Outcome.OK, result.reason
    found = result.capacity
    assert found is not None and found.rate is not None
    assert abs(found.rate / known - 1) <= 0.10, (found.rate, known, found.points)
    # one engine, fresh prompts every step (the burst is step 0), at most 12 rate steps
    assert steps == list(range(len(found.points) + 1)) and len(found.points) <= 12
    met = [p.rate for p in found.points if p.met]
    missed = [p.rate for p in found.points if not p.met]
    assert met and missed and max(met) == found.rate and min(missed) > found.rate
    assert min(missed) / found.rate - 1 <= 0.05  # bracketed to within 5%
    at = found.at_capacity
    assert at is not None and at.metrics.ttft_ms_p95 <= limit_ms
    assert result.metrics == at.metrics


SMALL = {  # a ~1B Llama (as test_goals_fake)
    "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 5632,
    "max_position_embeddings": 8192, "num_attention_heads": 32, "num_hidden_layers": 16,
    "num_key_value_heads": 8, "torch_dtype": "bfloat16", "vocab_size": 32000,
}  # fmt: skip
TUNE_ENV = {"AUTOTUNE_FAKE_STARTUP_S": "0.2", "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
            "AUTOTUNE_FAKE_STEP_FIXED_MS": "40"}  # fmt: skip


def test_objective_capacity_without_an_slo_is_one_line(model_dir: Path) -> None:
    done = run_autotune("tune", model_dir, "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24",
                        "--objective", "capacity", "--quiet", env=TUNE_ENV)  # fmt: skip
    assert done.returncode != 0
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith("--objective capacity needs at least one --slo NAME=MS")
    )
    assert "Traceback" not in done.stderr


def test_tune_for_capacity_saves_it_and_the_report_draws_the_rate_curves(tmp_path: Path) -> None:
    model = write_model(tmp_path / "small", SMALL)
    done = run_autotune(
        "tune", model, "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--input-len", "32",
        "--output-len", "8", "--num-prompts", "40", "--objective", "capacity",
        "--slo", "ttft_p95_ms=300", "--trials", "3", "--repeats", "1", "--no-soak",
        "--max-num-seqs", "2:16", "--enqueue", "max_num_seqs=2", "--enqueue", "max_num_seqs=16",
        "--gpu-memory-utilization", "0.9", "--max-model-len", "2048", "--quiet", env=TUNE_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = Path(os.environ["AUTOTUNE_PROFILES_DIR"]).rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    assert profile["objective"] == "capacity" and profile["constraints"] == {"ttft_p95_ms": 300.0}
    metrics = profile["metrics"]
    capacity = metrics["capacity_rps"]
    assert capacity > 0 and metrics["ttft_ms_p95"] <= 300  # the latency at capacity
    steps = metrics["capacity_points"]
    assert max(p["rate"] for p in steps if p["met"]) == capacity
    assert any(not p["met"] for p in steps) and all(p["output_throughput"] >= 0 for p in steps)
    # every trial's value is its capacity; the profile holds the highest
    trials = study().trials
    rates = [t.user_attrs["capacity"]["rate"] or 0.0 for t in trials]
    assert len(trials) == 3 and [t.values[0] for t in trials] == rates
    assert capacity == pytest.approx(max(rates), rel=1e-3)
    # /metrics over the whole search: a capacity trial still says what the engine saw
    assert all(t.user_attrs["peak_requests_running"] >= 1 for t in trials)
    assert all(t.user_attrs["preemptions"] is not None for t in trials)
    listed = run_autotune("trials", model, "--json")
    assert listed.returncode == 0, listed.stderr
    (rows,) = json.loads(listed.stdout).values()  # one study
    assert sorted(r["capacity_rps"] or 0.0 for r in rows) == sorted(rates)
    table = run_autotune("trials", model)
    assert "req/s" in table.stdout and f"{max(rates):.3g}" in table.stdout
    shown = run_autotune("profiles", "show", model, "--gpu", "L4:24", "--vllm-cmd", FAKE_CMD)
    assert shown.returncode == 0, shown.stderr
    assert f"# capacity: {capacity:.3g} requests/s within ttft_p95_ms=300" in shown.stdout

    out = tmp_path / "report" / "r.html"
    report = run_autotune("report", model, "-o", out, "--png", timeout=120)
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    number = profile["provenance"]["trial"]
    assert "Capacity against request rate" in page
    assert f"trial {number} (chosen): capacity" in page and "(runner-up): capacity" in page
    assert out.with_name("r-capacity.png").stat().st_size > 10_000


def study() -> optuna.Study:
    storage = f"sqlite:///{Path(os.environ['AUTOTUNE_STATE_DIR']) / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)
