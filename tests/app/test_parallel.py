"""The one tensor-parallel decision (``autotune.app.parallel``) shared by ``tune`` and the
profile lookup of ``serve``/``profiles show|export|verify``: the user's ``-tp``, else a layout the
store holds a matching profile under, else the memory model at the top of the utilization range."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from autotune.app.lookup import ProfileLookup, lookup, stored_layouts
from autotune.app.options import TuneOptions
from autotune.app.parallel import Layout, Need, decide, for_tune, needed_tensor_parallel
from autotune.errors import UserError
from autotune.hardware import Hardware, parse_gpu_spec
from autotune.memory.setup import base_model, engine_flags
from autotune.model import ModelSpec, resolve_model
from autotune.profiles.store import SINGLE_DEVICE, ProfileStore
from tests.conftest import LLAMA_8B, LLAMA_70B, LLAMA_70B_FP8, write_model
from tests.profiles.test_store import make

H100 = parse_gpu_spec("H100:80", source="flag")
L4_12 = parse_gpu_spec("L4:12", source="flag")
CPU = Hardware(gpu_name="EPYC", memory_gib=64, device="cpu", cores=8, source="cpu")
GIB = 2**30


def spec_of(tmp_path: Path, config: dict[str, Any], name: str = "m") -> ModelSpec:
    return resolve_model(str(write_model(tmp_path / name, config)))


def test_fp8_70b_fits_one_h100_at_the_top_of_the_range(tmp_path: Path) -> None:
    """67.7 GiB of weights on 80 GiB: 85% of the GPU, above the old fixed 80% share, yet one GPU
    holds them, the rest of the engine and a 4096-token request at 0.98 (and at 0.96)."""
    spec = spec_of(tmp_path, LLAMA_70B_FP8)
    found = base_model(spec=spec, hardware=H100, flags=engine_flags([]))
    assert found is not None and 67.5 < found[0].weights_bytes / GIB < 68.0
    for top in (0.98, 0.96):
        layout = decide(spec=spec, hardware=H100, extra_args=(), need=Need(utilization=top))
        assert layout == Layout(1, (), "memory")
    # At 0.85 (68 GiB) the weights alone take it all: two GPUs per engine, and said why.
    need = needed_tensor_parallel(
        spec=spec, hardware=H100, extra_args=(), need=Need(utilization=0.85)
    )
    assert need is not None and need[0] == 2 and "weights (67.7 GiB)" in need[1]


def test_weights_that_cannot_fit_one_gpu_get_the_smallest_power_of_two(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bf16 = spec_of(tmp_path, LLAMA_70B, "bf16")  # 131 GiB
    with caplog.at_level(logging.INFO, logger="autotune"):
        layout = decide(spec=bf16, hardware=H100, extra_args=("--dtype", "auto"), need=Need())
    assert layout == Layout(2, ("--dtype", "auto", "--tensor-parallel-size", "2"), "memory")
    (line,) = [r.getMessage() for r in caplog.records if "tensor-parallel-size" in r.getMessage()]
    assert "one H100 cannot hold the weights (131.4 GiB)" in line
    assert line.endswith("--tensor-parallel-size 2, 2 GPUs per engine")
    small = spec_of(tmp_path, LLAMA_8B, "8b")  # 15 GiB on 12 GiB GPUs
    assert decide(spec=small, hardware=L4_12, extra_args=(), need=Need()).tensor_parallel == 2
    # 131 GiB of weights on 12 GiB GPUs: sixteen (8 would hold 16.4 GiB each).
    assert decide(spec=bf16, hardware=L4_12, extra_args=(), need=Need()).tensor_parallel == 16


def test_the_user_s_size_wins_and_no_store_is_asked(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, LLAMA_70B, "bf16")

    def store() -> list[int]:
        raise AssertionError("the store is not asked when -tp is given")

    for extra in (("-tp", "4"), ("--tensor-parallel-size=4",)):
        layout = decide(spec=spec, hardware=H100, extra_args=extra, need=Need(), stored=store)
        assert layout == Layout(4, extra, "given")


def test_a_stored_layout_is_evidence_and_one_gpu_is_preferred(tmp_path: Path) -> None:
    """A profile for a layout on this hardware says the layout fits, whatever the heuristic."""
    bf16 = spec_of(tmp_path, LLAMA_70B, "bf16")  # the memory model says 2
    fp8 = spec_of(tmp_path, LLAMA_70B_FP8, "fp8")  # the memory model says 1

    def at(*sizes: int) -> Layout:
        return decide(spec=bf16, hardware=H100, extra_args=(), need=Need(), stored=lambda: sizes)

    assert at(1) == Layout(1, (), "profile")
    assert at(4, 2, 1) == Layout(1, (), "profile")
    assert at(8, 4) == Layout(4, ("--tensor-parallel-size", "4"), "profile")
    stored = decide(spec=fp8, hardware=H100, extra_args=(), need=Need(), stored=lambda: [2])
    assert stored.tensor_parallel == 2
    assert at() == Layout(2, ("--tensor-parallel-size", "2"), "memory")  # a miss: the model


def test_one_gpu_when_the_memory_model_cannot_say_or_on_the_cpu(tmp_path: Path) -> None:
    hub = ModelSpec(model_id="org/not-cached", known=False)  # no config.json here
    assert decide(spec=hub, hardware=H100, extra_args=(), need=Need()) == Layout(1, (), "one")
    bf16 = spec_of(tmp_path, LLAMA_70B, "bf16")
    assert decide(spec=bf16, hardware=CPU, extra_args=(), need=Need()) == Layout(1, (), "one")


def test_need_is_the_top_of_the_options_memory_range_and_the_low_end_of_the_batches() -> None:
    assert Need.of(TuneOptions(model="m"), memory_gib=80) == Need(0.98, 8, 512, None)
    opts = TuneOptions(
        model="m",
        ranges={
            "gpu_memory_utilization": "0.8:0.96",
            "max_num_seqs": "32:64",
            "max_num_batched_tokens": "2048",
        },
        min_model_len=8192,
    )
    assert Need.of(opts, memory_gib=80) == Need(0.96, 32, 2048, 8192)
    assert Need.of(replace(opts, memory_budget="60GiB"), memory_gib=80).utilization == 0.75
    assert Need.of(replace(opts, memory_budget="0.99"), memory_gib=80).utilization == 0.96
    with pytest.raises(UserError):
        Need.of(replace(opts, ranges={"gpu_memory_utilization": "lots"}), memory_gib=80)
    short = ModelSpec(model_id="m", known=True, max_position_embeddings=2048)
    assert Need().request_tokens(short) == 2048
    assert Need(min_model_len=1024).request_tokens(short) == 1024
    assert Need().request_tokens(ModelSpec(model_id="m", known=False)) == 4096


def test_tune_decides_as_a_lookup_that_finds_no_profile(tmp_path: Path) -> None:
    """``tune`` with and without ``--gpus``: the same decision, the store never asked."""
    model = write_model(tmp_path / "bf16", LLAMA_70B)
    opts = TuneOptions(model=str(model), gpu="H100:80", extra_args=("--dtype", "auto"))
    assert for_tune(opts).extra_args == ("--dtype", "auto", "--tensor-parallel-size", "2")
    assert for_tune(replace(opts, gpus="all")).tensor_parallel == 2
    assert for_tune(replace(opts, extra_args=("-tp", "8"))) == Layout(8, ("-tp", "8"), "given")
    fp8 = write_model(tmp_path / "fp8", LLAMA_70B_FP8)
    assert for_tune(replace(opts, model=str(fp8))).tensor_parallel == 1
    bad = replace(opts, model=str(tmp_path / "missing"))
    assert for_tune(bad) == Layout(1, opts.extra_args, "one")  # preparing says what is wrong
    dry = TuneOptions(model=str(model), gpu="H100:80", vllm_cmd="no-such-vllm serve")
    where = lookup(dry, workload=None, strict=False)
    assert where.hardware.key == "h100-80gib-x2" and where.parallel == {"tensor_parallel_size": 2}


def saved(store: ProfileStore, spec: ModelSpec, tp: int, **changes: Any) -> None:
    hw = replace(H100, count=tp).to_dict()
    profile = replace(
        make("2026-01-01"),
        model={"id": "m", "name": spec.name, "config_hash": spec.config_hash},
        hardware=hw,
        parallel=SINGLE_DEVICE | {"tensor_parallel_size": tp},
        extra_args=["--tensor-parallel-size", str(tp)] if tp > 1 else [],
    )
    store.save(replace(profile, **changes))


def test_stored_layouts_match_as_find_profile_does(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, LLAMA_70B_FP8, "fp8")
    store = ProfileStore(tmp_path / "profiles")
    at = ProfileLookup(
        store=store, spec=spec, hardware=H100, command=["vllm", "serve"], version="0.33.2",
        workload=None, parallel={},
    )  # fmt: skip
    assert stored_layouts(at) == []
    saved(store, spec, 2)
    saved(store, spec, 4, vllm_version="0.34.0")  # another minor release: no evidence
    saved(store, spec, 8, model={"id": "m", "name": spec.name, "config_hash": "other"})
    saved(store, replace(spec, model_id="other-model", path=None), 1)
    a100 = replace(H100, gpu_name="A100").to_dict()
    store.save(replace(make("2026-01-01"), model={"id": "m", "name": spec.name}, hardware=a100))
    assert stored_layouts(at) == [2]
    assert stored_layouts(replace(at, workload="in1-out1")) == []
    assert stored_layouts(replace(at, limits={"ttft_p95_ms": 100.0})) == []
    saved(store, spec, 1, vllm_version="0.33.0")
    assert stored_layouts(at) == [1, 2]
    layout = decide(
        spec=spec, hardware=H100, extra_args=(), need=Need(), stored=lambda: stored_layouts(at)
    )
    assert layout == Layout(1, (), "profile")


def test_lookup_uses_the_stored_layout_before_the_memory_model(tmp_path: Path) -> None:
    """serve/show/export/verify: a profile tuned on one GPU is found even where the memory model
    (here for a 131072-token context) would now say two; and the other way round."""
    model = write_model(tmp_path / "fp8", LLAMA_70B_FP8)
    spec = resolve_model(str(model))
    store = ProfileStore(tmp_path / "profiles")
    opts = TuneOptions(
        model=str(model),
        gpu="H100:80",
        vllm_cmd="no-such-vllm serve",  # version unknown: matched without it
        profiles_dir=store.root,
        min_model_len=131072,  # (serve's --gpu-memory-utilization V would cap the profile's)
    )
    assert lookup(opts, workload=None, strict=False).hardware.key == "h100-80gib-x2"  # no profile
    saved(store, spec, 1)
    where = lookup(opts, workload=None, strict=False)
    assert (where.hardware.key, where.parallel, where.extra_args) == ("h100-80gib-x1", {}, ())
    assert where.find() is not None
    other = write_model(tmp_path / "bf16", LLAMA_70B)
    saved(store, resolve_model(str(other)), 4)
    where = lookup(replace(opts, model=str(other)), workload=None, strict=False)
    assert where.hardware.key == "h100-80gib-x4" and where.parallel == {"tensor_parallel_size": 4}
    assert where.extra_args == ("--tensor-parallel-size", "4") and where.find() is not None
    given = lookup(replace(opts, extra_args=("-tp", "2")), workload=None, strict=False)
    assert given.hardware.key == "h100-80gib-x2" and given.find() is None
