"""``autotune plan``: the analytic model's numbers without a launch (vllm-facts §4 arithmetic)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
from pathlib import Path

from tests.conftest import CONFIGS, run_autotune, write_model

GIB = 2**30


def plan(*args: str) -> subprocess.CompletedProcess[str]:
    return run_autotune("plan", *args, timeout=60)


def test_plan_json_llama_3_1_8b_on_an_h100(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "meta-llama--Llama-3.1-8B.json").read_text())
    model = write_model(tmp_path / "llama", config)
    done = plan(str(model), "--gpu", "H100:80", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2 == 131072
    assert data["weights_bytes"] == 8_029_995_008 * 2  # ≈ 16 GB of bf16 parameters
    assert (data["max_num_seqs"], data["max_num_batched_tokens"]) == (1024, 8192)  # vLLM's
    utils = [r["gpu_memory_utilization"] for r in data["rows"]]
    assert utils[0] == 0.5 and utils[-1] == 0.95 and {0.9, 0.92} <= set(utils)
    for row in data["rows"]:
        assert set(row) >= {"gpu_memory_utilization", "kv_cache_tokens", "max_model_len_fit",
                            "max_concurrency"}  # fmt: skip
        non_kv = sum(data[k] for k in ("weights_bytes", "activation_bytes", "cuda_graph_bytes",
                                       "non_torch_bytes"))  # fmt: skip
        kv = math.ceil(row["gpu_memory_utilization"] * 80 * GIB) - non_kv
        blocks = kv // (16 * 131072)
        assert row["kv_cache_tokens"] == blocks * 16
        assert row["max_model_len_fit"] == min(131072, (blocks - 1) * 16)  # the null block
        assert row["max_concurrency"] == round(blocks / (131072 // 16), 2)
    tokens = [r["kv_cache_tokens"] for r in data["rows"]]
    assert tokens == sorted(tokens) and 400_000 < tokens[utils.index(0.9)] < 480_000

    fp8 = json.loads(plan(str(model), "--gpu", "H100:80", "--json", "--",
                          "--kv-cache-dtype", "fp8", "-tp", "2").stdout)  # fmt: skip
    assert fp8["kv_bytes_per_token"] == 2 * 32 * (8 // 2) * 128 * 1
    assert fp8["weights_bytes"] == 8_029_995_008


def test_plan_table_and_cpu_rows(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "meta-llama--Llama-3.1-8B.json").read_text())
    model = write_model(tmp_path / "llama", config)
    table = plan(str(model), "--gpu", "L4:24", "--max-model-len", "8192")
    assert table.returncode == 0, table.stderr
    assert "131,072 bytes" in table.stdout and "concurrency @ 8,192" in table.stdout
    cpu = json.loads(plan(str(model), "--device", "cpu", "--json").stdout)
    sizes = [r["kv_cache_memory_bytes"] for r in cpu["rows"]]
    assert sizes[0] == 256 * 2**20 and all(b == 2 * a for a, b in itertools.pairwise(sizes))
    assert cpu["block_size"] == 128 and cpu["rows"][0]["gpu_memory_utilization"] is None
    assert cpu["rows"][0]["kv_cache_tokens"] == 256 * 2**20 // (128 * 131072) * 128


def test_plan_refuses_what_it_cannot_model(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "Qwen--Qwen3-Next-80B-A3B-Instruct.json").read_text())
    done = plan(str(write_model(tmp_path / "qwen-next", config)), "--gpu", "H100:80")
    assert done.returncode == 2 and "cannot" in done.stderr and "Traceback" not in done.stderr
