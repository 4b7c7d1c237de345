"""``tune`` against the fake engine: one progress counter of launches against ``--trials``, a
rerun with the budget spent says so, and the run ends with a one-line summary (``--json``: the
summary as JSON on stdout)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import FAKE_CMD, run_autotune

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FAKE_ENV = {
    "AUTOTUNE_FAKE_STARTUP_S": "0.2",
    "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
    "AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24",
}
ARGS = [
    "--vllm-cmd", FAKE_CMD, "--gpu", "L4:24", "--max-model-len", "8192",
    "--input-len", "64", "--output-len", "8", "--num-prompts", "16",
    "--seed", "3", "--quiet", "--no-soak", "--no-prescreen",
]  # fmt: skip
COUNTER = re.compile(r"trial (\d+) \((\d+)/(\d+)\): ")


def counters(stderr: str) -> list[tuple[int, int]]:
    return [(int(m[2]), int(m[3])) for m in COUNTER.finditer(stderr)]


def test_counter_budget_and_summary(model_dir: Path) -> None:
    env = {**os.environ, **FAKE_ENV}
    trials = 7  # the study's share and the re-measures of the finalists (3 x 2 by default)
    done = run_autotune("tune", model_dir, *ARGS, "--trials", str(trials), "--json", env=env)
    assert done.returncode == 0, done.stderr
    seen = counters(done.stderr)
    assert seen, done.stderr
    assert {total for _, total in seen} == {trials}  # one denominator: --trials
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1))  # one count, never restarted
    assert len(seen) <= trials

    summary = json.loads(done.stdout)  # stdout carries only the summary
    assert summary["saved"] is True and Path(summary["profile"]).is_file()
    assert summary["output_throughput"] > 0 and summary["vllm_args"]["max_num_seqs"] >= 1
    line = next(ln for ln in done.stderr.splitlines() if "chosen: trial" in ln)
    assert f"chosen: trial {summary['trial']}, {summary['output_throughput']:.1f} " in line
    assert f"seqs={summary['vllm_args']['max_num_seqs']}" in line
    assert line.endswith(f"profile saved to {summary['profile']}")

    spent = len(seen)  # the same study with no launch left: said, in one line
    again = run_autotune("tune", model_dir, *ARGS, "--trials", str(spent), env=env)
    assert again.returncode == 0, again.stderr
    assert counters(again.stderr) == []
    said = [ln for ln in again.stderr.splitlines() if "nothing to launch" in ln]
    assert len(said) == 1 and f"{spent} of --trials {spent} launches" in said[0]
    assert again.stdout == ""  # no --json: nothing on stdout
