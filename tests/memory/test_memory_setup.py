"""The model before any launch: engine flags after ``--``, and the max_num_seqs bound."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autotune.app.options import TuneOptions
from autotune.app.prepare import prepare
from autotune.load.workload import Workload
from autotune.memory.setup import EngineFlags, engine_flags
from tests.conftest import FAKE_CMD

GIB = 2**30


def test_engine_flags() -> None:
    assert engine_flags(()) == EngineFlags()
    flags = engine_flags(["--enforce-eager", "-tp", "2", "--kv-cache-dtype=fp8", "--dtype", "half",
                          "--block-size", "32", "--seed", "1"])  # fmt: skip
    assert flags == EngineFlags(tp=2, dtype="half", kv_cache_dtype="fp8", block_size=32, eager=True)
    assert engine_flags(["-O", "0"]).eager and engine_flags(["-O0"]).eager
    assert not engine_flags(["--optimization-level=3"]).eager
    assert engine_flags(["--tensor-parallel-size"]).tp == 1  # no value: vLLM's own error


def seqs_range(model_dir: Path, gpu: str, **kw: Any) -> tuple[object, object]:
    options = TuneOptions(model=str(model_dir), gpu=gpu, vllm_cmd=FAKE_CMD, **kw)
    dim = prepare(options).space["max_num_seqs"]
    return dim.low, dim.high


def test_max_num_seqs_ends_at_what_the_kv_cache_can_hold(model_dir: Path) -> None:
    # L40S, 48 GiB: at 0.98 at most ceil(0.98 x 48 GiB) - 90% of the 16.06 GB of weights hold
    # requests of 512 + 128 tokens = 40 blocks of 2 MiB each
    weights = 8_029_995_008 * 2
    cap = (math.ceil(0.98 * 48 * GIB) - int(0.9 * weights)) // (40 * 2 * 2**20)
    assert 256 < cap < 1024
    assert seqs_range(model_dir, "L40S:48") == (8, cap)
    # never below vLLM's default (256 on this GPU class): an L4 holds only ~120 such requests
    assert seqs_range(model_dir, "L4:24") == (8, 256)
    # short requests: the cap is above the range, which stays as it was
    assert seqs_range(model_dir, "L40S:48", workload=Workload(input_len=64, output_len=16)) == (
        8,
        1024,
    )
    # a range the user gave is theirs
    assert seqs_range(model_dir, "L40S:48", ranges={"max_num_seqs": "8:1024"}) == (8, 1024)
