"""Four simulated GPUs against one at the same launch budget: wall time and the quality of the
configuration each study chose.

Not a test. Runs ``autotune tune`` twice on the fake engine (``autotune.testing``) with
simulated GPUs (``AUTOTUNE_FAKE_GPU_DIR``): serially on one GPU, then with ``--gpus all`` on four,
each in its own state directory (per seed), and prints:

- **wall-time ratio** (4 GPUs / 1 GPU): the wall-clock seconds of each ``autotune tune``
  command, start to exit (the workers' start and the last launch's tail included). Ideal 0.25.
  The four fake engines and their load clients share this machine's CPU cores, so on a small
  machine each benchmark runs slower than alone: the ratio is pessimistic there.
- **quality ratio** (4 GPUs / 1 GPU): the throughput of the configuration each study chose (its
  profile's ``vllm_args``), valued by the fake's in-process truth (``landscape.FakeTruth``:
  the fake's own memory model and scheduler on a virtual clock, for the same requests), so the
  CPU contention during the parallel study does not count against its choice. Near 1 means the
  parallel study found as good a configuration with the same budget.

The measured best of each study (what the contended benchmarks said) is printed too, for
comparison: with four engines on two cores it understates the parallel study.

    .venv/bin/python benchmarks/parallel_gpus.py [--trials 16] [--startup-s 5] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.load.workload import build_requests  # noqa: E402
from autotune.profiles.store import ProfileStore  # noqa: E402
from autotune.profiles.verify import workload_of  # noqa: E402
from autotune.testing import fake_gpus  # noqa: E402
from autotune.testing.landscape import FakeTruth  # noqa: E402
from autotune.trial.record import TrialRecord  # noqa: E402
from tests.conftest import LLAMA_8B  # noqa: E402

FAKE_CMD = f"{shlex.quote(sys.executable)} -m autotune.testing.fake_engine serve"
VOCAB = int(str(LLAMA_8B["vocab_size"]))
FAKE_ENV = {"AUTOTUNE_FAKE_TIME_SCALE": "0.05"}


@dataclass(frozen=True)
class Run:
    """One study: its wall time, its measured best, and what the fake's truth says."""

    wall_s: float
    measured_best: float  # the best benchmark result the study recorded (output tok/s)
    chosen_true: float  # the chosen configuration, valued by FakeTruth
    best_true: float  # the best configuration it launched, valued by FakeTruth


def run(work: Path, *, gpus: int, trials: int, startup_s: float, seed: int) -> Run:
    model = work / "llama-8b"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.json").write_text(json.dumps(LLAMA_8B))
    env = {
        **os.environ,
        **FAKE_ENV,
        "AUTOTUNE_STATE_DIR": str(work / "state"),
        "AUTOTUNE_PROFILES_DIR": str(work / "profiles"),
        "AUTOTUNE_FAKE_GPU_DIR": str(fake_gpus.create(work / "gpus", gpus)),
        "AUTOTUNE_FAKE_STARTUP_S": str(startup_s),
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
    records = [TrialRecord.of(t) for t in study.trials]
    launched = [(t, r) for t, r in zip(study.trials, records, strict=True) if r.vllm_args]
    ok = [t.value for t, r in launched if r.ok and t.value]
    ((_, profile),) = ProfileStore(work / "profiles").all()
    workload, num_prompts, _ = workload_of(profile)
    requests = build_requests(workload, num_prompts=num_prompts, vocab_size=VOCAB)
    truth = FakeTruth(config=LLAMA_8B, env=env, requests=requests, model_tag=str(model))

    def value(args: dict[str, Any]) -> float:
        return truth.throughput(args)

    return Run(
        wall_s=wall,
        measured_best=max(ok, default=0.0),
        chosen_true=value(dict(profile.vllm_args)),
        best_true=max((value(dict(r.vllm_args)) for _, r in launched), default=0.0),
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--startup-s", type=float, default=5.0, help="simulated engine boot")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--seeds", type=int, default=1, help="studies of each kind")
    ns = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"launch budget {ns.trials}, simulated boot {ns.startup_s:g} s, {os.cpu_count()} CPUs")
    walls, quality = [], []
    with tempfile.TemporaryDirectory(prefix="autotune-parallel-") as tmp:
        for seed in range(ns.seed, ns.seed + ns.seeds):
            where = Path(tmp)
            one, four = (
                run(
                    where / f"{n}-{seed}",
                    gpus=n,
                    trials=ns.trials,
                    startup_s=ns.startup_s,
                    seed=seed,
                )
                for n in (1, 4)
            )
            print(f"seed {seed}")
            for label, r in (("serial (1 GPU)", one), ("--gpus (4 GPUs)", four)):
                print(
                    f"  {label:<16} wall {r.wall_s:6.1f} s; chosen {r.chosen_true:7.1f} tok/s "
                    f"(truth), best launched {r.best_true:7.1f} (truth), best measured "
                    f"{r.measured_best:7.1f}"
                )
            walls.append(_ratio(four.wall_s, one.wall_s))
            quality.append(_ratio(four.chosen_true, one.chosen_true))
            print(f"  wall-time ratio {walls[-1]:.2f}, quality ratio {quality[-1]:.3f}")
    print(f"wall-time ratio (4 GPUs / 1 GPU, wall clock): {statistics.mean(walls):.2f}")
    print(
        f"quality ratio (4 GPUs / 1 GPU, chosen configuration by truth): "
        f"{statistics.mean(quality):.3f}"
    )


if __name__ == "__main__":
    main()
