"""A study recorded the way ``tune`` records it (SQLite, no engine), for the listing tests."""

from __future__ import annotations

from pathlib import Path

import optuna

from autotune.engine.outcome import Outcome, StartupInfo
from autotune.search import study as st
from autotune.search import tell
from autotune.trial.record import remeasure_source, store
from autotune.trial.runner import TrialResult
from tests.report.test_report import metrics

MODEL = "m"
NAME = f"{MODEL}@l4-24gib-x1@in512-out128@throughput@abc123"
DIMS = {
    "gpu_memory_utilization": optuna.distributions.FloatDistribution(0.5, 0.98),
    "max_num_seqs": optuna.distributions.IntDistribution(8, 512, log=True),
    "max_num_batched_tokens": optuna.distributions.IntDistribution(512, 16384, log=True),
    "max_model_len": optuna.distributions.IntDistribution(2048, 131072, log=True),
}
LONG_REASON = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 23.57 GiB of which 1.20 GiB is free; including non-PyTorch memory"
)
# (outcome, throughput, source) per trial ("": the sampler's)
PLAN = [
    (Outcome.OK, 912.4, "vllm-defaults"),
    (Outcome.OOM_PROFILING, 0.0, ""),
    (Outcome.OK, 1234.5, ""),
    (Outcome.KV_TOO_SMALL, 0.0, "edge: gpu_memory_utilization 0.77 works, 0.8 fails"),
    (Outcome.OK, 1543.2, ""),
    (Outcome.OK, 1498.7, remeasure_source(4)),
]


def record_study(storage: str, logs: Path) -> optuna.Study:
    """Six finished trials with every tuned value, long failure reasons, sources and logs."""
    study = st.open_study(name=NAME, storage=storage, seed=0)
    study.set_user_attr("model", {"id": MODEL, "architecture": "LlamaForCausalLM"})
    for outcome, tput, source in PLAN:
        trial = study.ask(DIMS)
        store(trial, launched=True, source=source)
        args = dict(trial.params)
        args["gpu_memory_utilization"] = round(float(args["gpu_memory_utilization"]), 2)
        result = TrialResult(
            outcome=outcome,
            reason=LONG_REASON if tput == 0 else "",
            args=args,
            log_path=logs / f"trial-{trial.number:04d}.log",
            metrics=metrics(tput) if tput else None,
            startup=StartupInfo(kv_cache_tokens=123456) if tput else StartupInfo(),
            estimated_max_model_len=4096 if outcome is Outcome.KV_TOO_SMALL else None,
            preemptions=3 if tput else None,
            peak_kv_cache_usage_pct=87.5 if tput else None,
        )
        tell.tell(study, trial, result)
    study.set_user_attr("chosen_trial", 4)
    return study
