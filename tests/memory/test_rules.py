"""vLLM's dummy-image rule and learning from failures by class."""

from __future__ import annotations

import json
from typing import Any

from autotune.engine.multimodal import image_count, limit_arg, profiled_images, supports_size_hints
from autotune.engine.outcome import Outcome
from autotune.memory.rules import FailureRules
from autotune.search.screen_rules import ClassScreen
from autotune.trial.record import TrialRecord


def test_limit_argument_forms() -> None:
    assert json.loads(limit_arg(2)) == {"image": 2}
    hinted = json.loads(limit_arg(4, size=(512, 384)))
    assert hinted == {"image": {"count": 4, "width": 512, "height": 384}}
    assert image_count({"limit_mm_per_prompt": limit_arg(4, size=(1, 1))}) == 4
    assert image_count({"max_num_seqs": 8}) is None
    assert supports_size_hints("0.32.0+cpu") and supports_size_hints("0.11.1")
    assert not supports_size_hints("0.11.0") and not supports_size_hints(None)


def test_profiled_images_rule() -> None:
    # LLaVA-1.5 (576 tokens per image): the encoder budget binds ...
    assert profiled_images(image_tokens=576, limit=999, max_num_seqs=256,
                           max_num_batched_tokens=8192, max_model_len=4096) == 14  # fmt: skip
    # ... unless few sequences times few images per prompt are fewer
    assert profiled_images(image_tokens=576, limit=1, max_num_seqs=4,
                           max_num_batched_tokens=8192, max_model_len=4096) == 4  # fmt: skip
    # images per prompt are also capped by what fits in max_model_len
    assert profiled_images(image_tokens=576, limit=999, max_num_seqs=2,
                           max_num_batched_tokens=16384, max_model_len=1200) == 4  # fmt: skip
    # a budget below one image still profiles one; limit 0 builds no tower
    assert profiled_images(image_tokens=576, limit=3, max_num_seqs=8,
                           max_num_batched_tokens=256, max_model_len=4096) == 1  # fmt: skip
    assert profiled_images(image_tokens=576, limit=0, max_num_seqs=8,
                           max_num_batched_tokens=8192, max_model_len=4096) == 0  # fmt: skip


def args(util: float, seqs: int, tokens: int, limit: int, length: int = 4096) -> dict[str, object]:
    return {
        "gpu_memory_utilization": util,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
        "max_model_len": length,
        "limit_mm_per_prompt": limit_arg(limit),
    }


def text(util: float, seqs: int, tokens: int, length: int) -> dict[str, object]:
    return {"gpu_memory_utilization": util, "max_num_seqs": seqs,
            "max_num_batched_tokens": tokens, "max_model_len": length}  # fmt: skip


def test_profiling_oom_predicts_more_images_at_any_utilization() -> None:
    pre = FailureRules(image_tokens=576)
    failed = args(0.9, 64, 8192, 8)  # 14 dummy images
    pre.learn(trial=3, outcome=Outcome.OOM_PROFILING, args=failed, images=14)
    assert pre.check(args(0.9, 64, 8192, 8)) is not None
    why = pre.check(args(0.8, 32, 16384, 4))  # 28 images, lower utilization
    assert why is not None and "trial 3" in why and "28 >= 14" in why
    assert pre.check(args(0.9, 64, 4096, 8)) is None  # 7 images: not predicted
    # the dummy forward runs on the device before the utilization sizes anything: higher does
    # not help (the startup free-memory check aside)
    higher = pre.check(args(0.95, 64, 8192, 8))
    assert higher is not None and "at any gpu_memory_utilization" in higher


def test_free_memory_predicts_higher_utilization_only() -> None:
    pre = FailureRules(image_tokens=None)
    pre.learn(trial=1, outcome=Outcome.FREE_MEMORY, args=args(0.95, 8, 512, 1), images=None)
    assert pre.check(args(0.97, 8, 512, 1)) is not None
    assert pre.check(args(0.94, 256, 16384, 16)) is None


def test_kv_classes_predict_more_need_at_same_or_lower_memory_only() -> None:
    for outcome in (Outcome.KV_TOO_SMALL, Outcome.NO_KV_CACHE):
        pre = FailureRules(image_tokens=None)
        failed = text(0.9, 64, 8192, 16384)
        pre.learn(trial=4, outcome=outcome, args=failed, images=None)
        why = pre.check(text(0.85, 128, 8192, 32768))  # more of everything, less memory
        assert why is not None and outcome.value in why and "trial 4" in why
        assert pre.check(failed) is not None
        assert pre.check(text(0.95, 128, 8192, 32768)) is None  # more memory: not predicted
        assert pre.check(text(0.85, 128, 8192, 8192)) is None  # shorter context: not predicted
        assert pre.check(text(0.85, 32, 8192, 32768)) is None  # fewer sequences: not predicted
    bytes_dim = FailureRules(image_tokens=None)
    small = {"kv_cache_memory_bytes": 2**20, "max_num_seqs": 8, "max_num_batched_tokens": 512,
             "max_model_len": 2048}  # fmt: skip
    bytes_dim.learn(trial=1, outcome=Outcome.KV_TOO_SMALL, args=small, images=None)
    assert bytes_dim.check({**small, "kv_cache_memory_bytes": 2**19}) is not None
    assert bytes_dim.check({**small, "kv_cache_memory_bytes": 2**21}) is None


def test_graph_capture_oom_predicts_more_graphs_at_same_or_higher_utilization_only() -> None:
    pre = FailureRules(image_tokens=None)
    pre.learn(trial=2, outcome=Outcome.OOM_CUDA_GRAPHS, args=text(0.95, 128, 2048, 4096),
              images=None, after_kv=True)  # fmt: skip
    why = pre.check(text(0.97, 256, 1024, 2048))  # more capture sizes, higher utilization
    assert why is not None and "oom_cuda_graphs" in why and "CUDA graph sizes" in why
    assert pre.check(text(0.9, 256, 16384, 4096)) is None  # right below the cliff: never
    assert pre.check(text(0.97, 64, 2048, 4096)) is None  # fewer capture sizes
    # before the KV cache was allocated (the estimate pass), the batches must cover too
    early = FailureRules(image_tokens=None)
    early.learn(trial=2, outcome=Outcome.OOM_CUDA_GRAPHS, args=text(0.95, 128, 2048, 4096),
                images=None)  # fmt: skip
    assert early.check(text(0.97, 256, 1024, 2048)) is None
    assert early.check(text(0.97, 256, 4096, 2048)) is not None


def test_other_classes_predict_nothing() -> None:
    pre = FailureRules(image_tokens=576)
    for outcome in (Outcome.CRASH_UNDER_LOAD, Outcome.OOM_STARTUP, Outcome.STARTUP_CRASH):
        pre.learn(trial=1, outcome=outcome, args=args(0.9, 64, 8192, 8), images=14)
    assert pre.known == []
    assert pre.check(args(0.5, 1024, 16384, 16)) is None


def test_text_profiling_oom_uses_batch_dominance() -> None:
    pre = FailureRules(image_tokens=None)
    text = {"gpu_memory_utilization": 0.9, "max_num_seqs": 64, "max_num_batched_tokens": 8192}
    pre.learn(trial=2, outcome=Outcome.OOM_PROFILING, args=text, images=None)
    assert pre.check({**text, "max_num_batched_tokens": 16384}) is not None
    assert pre.check({**text, "max_num_seqs": 32}) is None


def test_learn_all_from_a_resumed_study() -> None:
    screen = ClassScreen(image_tokens=576)
    pre = screen.rules
    attrs = {"launched": True, "outcome": "oom_profiling", "vllm_args": args(0.9, 64, 8192, 8),
             "startup": {"profiled_images": 14}}  # fmt: skip
    rows: list[tuple[int, dict[str, Any]]] = [
        (0, attrs),
        (1, {"outcome": "skipped"}),
        (2, {**attrs, "outcome": "bogus"}),
    ]
    screen.learn_all([(n, TrialRecord.from_attrs(a)) for n, a in rows])
    assert len(pre.known) == 1 and pre.known[0].images == 14
    graphs = {**attrs, "outcome": "oom_cuda_graphs", "startup": {"kv_cache_tokens": 4096}}
    screen.learn_all(
        [(3, TrialRecord.from_attrs(graphs))]
    )  # failed capturing graphs after the KV cache was sized
    assert pre.known[-1].after_kv and pre.predict_kv_tokens(args(0.9, 64, 8192, 8)) is None
