from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import optuna
import pytest

from autotune.engine.defaults import vllm_defaults
from autotune.errors import UserError
from autotune.hardware import parse_gpu_spec
from autotune.model import resolve_model
from autotune.search.ranges import parse_range
from autotune.search.space import parse_candidate
from autotune.search.space_build import build_space
from tests.conftest import ROOT

L4 = parse_gpu_spec("L4:24", source="flag")


def numbers(args: Mapping[str, object]) -> dict[str, float]:
    return {k: float(v) for k, v in args.items() if isinstance(v, (int, float))}


def test_defaults_and_validity_by_construction(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    space = build_space(spec=spec, hardware=L4, overrides={}, min_model_len=2048)
    assert space["max_model_len"].low == 2048 and space["max_model_len"].high == 131072
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(200):
        trial = study.ask()
        args = numbers(space.args(space.sample(trial)))
        assert args["max_num_batched_tokens"] >= args["max_num_seqs"]
        assert 0.70 <= args["gpu_memory_utilization"] <= 0.98
        assert 2048 <= args["max_model_len"] <= 131072
        study.tell(trial, 0.0)


def test_fixed_and_reranged(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    space = build_space(
        spec=spec,
        hardware=L4,
        overrides={"max_model_len": "8192", "max_num_seqs": "8:256"},
        min_model_len=None,
    )
    assert space["max_model_len"].fixed
    assert [d.name for d in space.tuned] == [
        "gpu_memory_utilization",
        "max_num_seqs",
        "max_num_batched_tokens",
    ]
    study = optuna.create_study()
    trial = study.ask()
    args = numbers(space.args(space.sample(trial)))
    assert args["max_model_len"] == 8192 and "max_model_len" not in trial.params
    assert 8 <= args["max_num_seqs"] <= 256


def test_vllm_defaults_are_enqueued_in_range(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    space = build_space(spec=spec, hardware=L4, overrides={"max_num_batched_tokens": "512:4096"})
    h100 = vllm_defaults(parse_gpu_spec("H100:80", source="flag"), spec)
    assert h100 == {
        "image_limit": 999,
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 1024,
        "max_num_batched_tokens": 8192,
        "max_model_len": 131072,
    }
    assert vllm_defaults(parse_gpu_spec("A100:80", source="flag"), spec)["max_num_seqs"] == 256
    params = space.default_params(h100)
    assert params["max_num_batched_tokens"] == 4096  # clamped into the re-ranged space
    assert params["max_num_batched_tokens"] >= params["max_num_seqs"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("gpu_memory_utilization", "1.5", "outside vLLM's limits"),
        ("gpu_memory_utilization", "0.9:0.5", "low end is above"),
        ("max_num_seqs", "0", "outside vLLM's limits"),
        ("max_num_seqs", "abc", "expected an integer"),
        ("max_num_seqs", "1:2:3", "expected an integer"),
    ],
)
def test_bad_ranges(name: str, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_range(name, text)


def test_inconsistent_user_ranges(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    with pytest.raises(UserError, match="above the model's maximum"):
        build_space(spec=spec, hardware=L4, overrides={"max_model_len": "262144"})
    with pytest.raises(UserError, match="max_num_batched_tokens >= max_num_seqs"):
        build_space(
            spec=spec,
            hardware=L4,
            overrides={"max_num_seqs": "512", "max_num_batched_tokens": "256"},
        )


def test_unknown_model_leaves_length_to_vllm() -> None:
    spec = resolve_model("org/uncached")
    space = build_space(spec=spec, hardware=L4, overrides={})
    assert "max_model_len" not in space


def test_cpu_backend_tunes_kv_bytes(model_dir: Path) -> None:
    from autotune.hardware import Hardware

    cpu = Hardware(gpu_name="Xeon", memory_gib=24, source="cpu", device="cpu", cores=2)
    spec = resolve_model(str(model_dir))
    space = build_space(spec=spec, hardware=cpu, overrides={"max_model_len": "4096"})
    assert "gpu_memory_utilization" not in space
    kv = space["kv_cache_memory_bytes"]
    assert (kv.low, kv.high) == (256 << 20, 6 << 30)  # a quarter of RAM caps the default
    defaults = space.default_params(vllm_defaults(cpu, spec))
    assert defaults == {
        "kv_cache_memory_bytes": 4 << 30,
        "max_num_seqs": 128,
        "max_num_batched_tokens": 2048,
    }
    with pytest.raises(UserError, match="sized in bytes"):
        build_space(spec=spec, hardware=cpu, overrides={"gpu_memory_utilization": "0.5"})
    gpu_kv = build_space(spec=spec, hardware=L4, overrides={"kv_cache_memory_bytes": "1G:8G"})
    assert (
        "gpu_memory_utilization" not in gpu_kv and gpu_kv["kv_cache_memory_bytes"].high == 8 << 30
    )


def test_byte_suffixes_and_candidates(model_dir: Path) -> None:
    assert parse_range("kv_cache_memory_bytes", "512M:2GiB") == (512 << 20, 2 << 30)
    assert parse_range("kv_cache_memory_bytes", "1048576") == (1 << 20, 1 << 20)
    spec = resolve_model(str(model_dir))
    space = build_space(spec=spec, hardware=L4, overrides={"max_model_len": "8192"})
    assert parse_candidate(space, "max_num_seqs=64, --max-num-batched-tokens=1024") == {
        "max_num_seqs": 64,
        "max_num_batched_tokens": 1024,
    }
    for bad in ("max_model_len=4096", "nope=1", "max_num_seqs=5000", "max_num_seqs=x",
                "max_num_seqs=1000,max_num_batched_tokens=600"):  # fmt: skip
        with pytest.raises(UserError, match="--enqueue"):
            parse_candidate(space, bad)


def test_vision_space_adds_the_image_limit() -> None:
    llava = ROOT / "examples" / "llava-1.5-7b"
    spec = resolve_model(str(llava))
    space = build_space(
        spec=spec, hardware=L4, overrides={}, min_images=4, image_size_hint=(336, 336)
    )
    dim = space["image_limit"]
    assert (dim.low, dim.high, dim.flag) == (4, 16, "--limit-mm-per-prompt")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    limits = set()
    for _ in range(50):
        args = space.args(space.sample(study.ask()))
        image = json.loads(str(args["limit_mm_per_prompt"]))["image"]
        assert image["width"] == 336 and image["height"] == 336 and 4 <= image["count"] <= 16
        limits.add(image["count"])
    assert len(limits) > 5
    defaults = space.default_params(vllm_defaults(L4, spec))
    assert defaults["image_limit"] == 16  # vLLM's 999, clamped into the space
    most = build_space(spec=spec, hardware=L4, overrides={}, images_max=True)["image_limit"]
    assert (most.low, most.high) == (1, 4096 // 576)  # the images LLaVA's context holds
    plain = build_space(spec=spec, hardware=L4, overrides={"image_limit": "2"})
    assert plain.args({})["limit_mm_per_prompt"] == '{"image": 2}'
    with pytest.raises(UserError, match="below --min-images"):
        build_space(spec=spec, hardware=L4, overrides={"image_limit": "1:3"}, min_images=4)
