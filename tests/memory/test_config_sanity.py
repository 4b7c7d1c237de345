"""config.json sanity (issue 16): numbers of the wrong type, zero, negative or absurdly large are
one clear line before any arithmetic; every published config still reads."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.memory.arch import architecture_from_config
from autotune.model import resolve_model
from tests.conftest import CONFIGS, LLAMA_8B, write_model


@pytest.mark.parametrize("config_file", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.stem)
def test_published_configs_pass(config_file: Path, tmp_path: Path) -> None:
    config = json.loads(config_file.read_text())
    spec = resolve_model(str(write_model(tmp_path / "m", config)))
    assert spec.known
    with contextlib.suppress(NotImplementedError):  # one the memory model does not predict
        architecture_from_config(config)


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"num_hidden_layers": 1e9}, "num_hidden_layers = 1000000000.0 is not an integer"),
        ({"num_hidden_layers": -4}, "num_hidden_layers = -4"),
        ({"num_hidden_layers": True}, "num_hidden_layers = True"),
        ({"num_attention_heads": "32"}, "num_attention_heads = '32'"),
        ({"num_attention_heads": 0}, "num_attention_heads = 0"),
        ({"num_attention_heads": 8192}, "hidden_size 4096 is smaller than the 8192 heads"),
        ({"num_key_value_heads": [8]}, "num_key_value_heads = [8]"),
        ({"vocab_size": 1 << 40}, "vocab_size"),
        ({"max_position_embeddings": "x" * 500}, "max_position_embeddings = 'xxxx"),
        ({"text_config": {"num_hidden_layers": -1}}, "num_hidden_layers = -1"),
        ({"architectures": "LlamaForCausalLM"}, "architectures must be a list"),
        ({"torch_dtype": {"x": 1}}, "torch_dtype must be a name"),
    ],
)
def test_model_spec_refuses_insane_numbers(
    changes: dict[str, object], needle: str, tmp_path: Path
) -> None:
    model = write_model(tmp_path / "m", {**LLAMA_8B, **changes})
    with pytest.raises(UserError, match=r"config\.json") as err:
        resolve_model(str(model))
    assert needle in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"intermediate_size": "x"}, "intermediate_size = 'x'"),
        ({"sliding_window": 10, "sliding_window_pattern": 0}, "sliding_window_pattern = 0"),
        ({"num_local_experts": -2}, "num_local_experts = -2"),
        ({"kv_lora_rank": 0, "model_type": "deepseek_v2"}, "kv_lora_rank = 0"),
        ({"layer_types": "full_attention"}, "layer_types must be a list"),
        ({"vision_config": {"patch_size": 0}}, "patch_size = 0"),
        ({"vision_config": [1]}, "vision_config must be an object"),
        ({"quantization_config": "fp8"}, "quantization_config must be an object"),
        ({"quantization_config": {"quant_method": "gptq", "bits": "4"}}, "bits = '4'"),
        (
            {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": [1]}},
            "config_groups must be objects",
        ),
        ({"hidden_size": 16, "num_attention_heads": 32}, "smaller than the 32 heads"),
    ],
)
def test_architecture_refuses_insane_numbers(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(UserError, match=r"config\.json") as err:
        architecture_from_config({"model_type": "llama", **LLAMA_8B, **changes})
    assert needle in str(err.value)


def test_a_billion_layers_allocate_nothing() -> None:
    """Refused by the type and range check, before a per-layer tuple is built."""
    with pytest.raises(UserError, match="num_hidden_layers = 1000000000 "):
        architecture_from_config({**LLAMA_8B, "num_hidden_layers": 10**9})
