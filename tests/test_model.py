from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.model import resolve_model
from tests.conftest import LLAMA_8B, write_model


def test_local_directory(model_dir: Path) -> None:
    spec = resolve_model(str(model_dir))
    assert spec.known and spec.architecture == "LlamaForCausalLM"
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (32, 32, 8, 128)
    assert spec.max_position_embeddings == 131072 and spec.dtype == "bfloat16"
    assert not spec.is_vision
    # 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB per token (vllm-facts §4)
    assert spec.kv_bytes_per_token() == 131072
    assert spec.kv_bytes_per_token(tp=2) == 65536
    assert spec.name == "llama-8b"


def test_vision_config_reads_text_config(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlavaForConditionalGeneration"],
        "text_config": {**LLAMA_8B, "max_position_embeddings": 4096},
        "vision_config": {"hidden_size": 64},
    }
    spec = resolve_model(str(write_model(tmp_path / "llava", cfg)))
    assert spec.is_vision and spec.max_position_embeddings == 4096 and spec.num_layers == 32


def test_hf_cache_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "hub" / "models--org--m" / "snapshots" / "abc123"
    write_model(snap)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = resolve_model("org/m")
    assert spec.known and spec.name == "org--m" and spec.num_layers == 32
    assert spec.revision == "abc123" and spec.to_dict()["revision"] == "abc123"


def test_quantization_and_config_hash(tmp_path: Path) -> None:
    plain = resolve_model(str(write_model(tmp_path / "plain")))
    quant = {**LLAMA_8B, "quantization_config": {"quant_method": "fp8"}}
    fp8 = resolve_model(str(write_model(tmp_path / "fp8", quant)))
    assert plain.quantization is None and plain.revision is None and fp8.quantization == "fp8"
    assert plain.config_hash and fp8.config_hash and plain.config_hash != fp8.config_hash


def test_unknown_hub_id_is_accepted_but_marked() -> None:
    spec = resolve_model("someorg/not-cached")
    assert not spec.known and spec.max_position_embeddings is None
    assert "not checked" in spec.unknown_reasons[0]


@pytest.mark.parametrize("bad", ["./does-not-exist", "/nope/model", "a/b/c"])
def test_missing_local_path_is_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(bad)


def test_bad_config_json(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve_model(str(tmp_path / "m"))
    (tmp_path / "m" / "config.json").write_text(json.dumps([1]))
    with pytest.raises(UserError, match="JSON object"):
        resolve_model(str(tmp_path / "m"))
