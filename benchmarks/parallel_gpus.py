"""Four simulated GPUs against one at the same launch budget: wall time and best result.

Not a test. Runs ``autotune tune`` twice on the fake engine (``autotune.testing``) with
simulated GPUs (``AUTOTUNE_FAKE_GPU_DIR``): serially on one GPU, then with ``--gpus all`` on four,
each in its own state directory, and prints the ratios of one run of each:

    .venv/bin/python benchmarks/parallel_gpus.py [--trials 16] [--startup-s 5]

Expect a wall-time ratio near 1/4 (plus the workers' start and the last launch's tail) and a
best-result ratio near 1: the parallel study proposes with less information per launch (TPE's
constant liar stands in for the running trials), which may cost a little at a small budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.testing import fake_gpus  # noqa: E402
from tests.conftest import LLAMA_8B  # noqa: E402

FAKE_CMD = f"{shlex.quote(sys.executable)} -m autotune.testing.fake_engine serve"


def run(work: Path, *, gpus: int, trials: int, startup_s: float, seed: int) -> tuple[float, float]:
    """(wall seconds, best output tok/s) of one study."""
    model = work / "llama-8b"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(LLAMA_8B))
    env = {
        **os.environ,
        "AUTOTUNE_STATE_DIR": str(work / "state"),
        "AUTOTUNE_PROFILES_DIR": str(work / "profiles"),
        "AUTOTUNE_FAKE_GPU_DIR": str(fake_gpus.create(work / "gpus", gpus)),
        "AUTOTUNE_FAKE_STARTUP_S": str(startup_s),
        "AUTOTUNE_FAKE_TIME_SCALE": "0.05",
        "AUTOTUNE_HEARTBEAT_S": "2",
    }
    argv = [
        sys.executable, "-m", "autotune", "tune", str(model), "--gpu", "L4:24",
        "--gpus", "all" if gpus > 1 else "0", "--trials", str(trials), "--seed", str(seed),
        "--repeats", "1", "--no-soak", "--quiet", "--vllm-cmd", FAKE_CMD,
        "--max-num-seqs", "8:256", "--min-model-len", "2048",
        "--input-len", "256", "--output-len", "32", "--num-prompts", "64",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"tune failed ({gpus} GPUs):\n{done.stderr[-3000:]}")
    storage = f"sqlite:///{work / 'state' / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    ok = [
        t.value
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("outcome") == "ok" and t.value is not None
    ]
    return wall, max(ok, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--startup-s", type=float, default=5.0, help="simulated engine boot")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="autotune-parallel-") as tmp:
        serial = run(Path(tmp) / "serial", gpus=1, trials=ns.trials, startup_s=ns.startup_s,
                     seed=ns.seed)  # fmt: skip
        four = run(Path(tmp) / "four", gpus=4, trials=ns.trials, startup_s=ns.startup_s,
                   seed=ns.seed)  # fmt: skip
    print(f"launch budget {ns.trials}, simulated boot {ns.startup_s:g} s")
    print(f"serial (1 GPU):   wall {serial[0]:7.1f} s, best {serial[1]:8.1f} output tok/s")
    print(f"--gpus (4 GPUs):  wall {four[0]:7.1f} s, best {four[1]:8.1f} output tok/s")
    print(f"wall-time ratio (4 GPUs / 1 GPU):   {four[0] / serial[0]:.2f}  (ideal 0.25)")
    ratio = four[1] / serial[1] if serial[1] else float("nan")
    print(f"best-result ratio (4 GPUs / 1 GPU): {ratio:.3f}")


if __name__ == "__main__":
    main()
