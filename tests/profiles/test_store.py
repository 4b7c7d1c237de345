from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.errors import UserError
from autotune.profiles.store import SCHEMA_VERSION, Profile, ProfileStore


def make(created: str, workload: str = "in512-out128", **args: Any) -> Profile:
    return Profile(
        schema_version=SCHEMA_VERSION,
        model={"id": "./m", "name": "m"},
        hardware={"gpu": "L4", "memory_gib": 24, "count": 1, "key": "l4-24gib-x1"},
        vllm_version="0.33.0",
        workload={"input_len": 512, "output_len": 128, "signature": workload},
        objective="throughput",
        vllm_args={"gpu_memory_utilization": 0.9, "max_num_seqs": 64, **args},
        extra_args=[],
        metrics={"output_throughput": 1000.0},
        startup={},
        provenance={"study": "s", "trial": 3, "created": created},
    )


def test_round_trip_and_newest_first(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    old = store.save(make("2026-01-01T00:00:00+00:00", workload="in128-out32"))
    new = store.save(make("2026-02-01T00:00:00+00:00"))
    assert old != new and not list(tmp_path.rglob(".tmp-*"))
    assert store.load(new) == make("2026-02-01T00:00:00+00:00")
    found = store.find(model_name="m", hardware_key="l4-24gib-x1")
    assert [p for p, _ in found] == [new, old]
    assert store.find(model_name="m", hardware_key="h100-80gib-x1") == []
    assert [p for p, _ in store.find(model_name="m", workload="in128-out32")] == [old]


def test_same_key_overwrites(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    a = store.save(make("2026-01-01T00:00:00+00:00", max_num_seqs=8))
    b = store.save(make("2026-01-02T00:00:00+00:00", max_num_seqs=16))
    assert a == b and store.load(b).vllm_args["max_num_seqs"] == 16


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "unknown keys extra"),
        (lambda d: d.pop("metrics"), "missing keys metrics"),
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.update(vllm_args=[1]), "vllm_args must be a mapping"),
    ],
)
def test_invalid_files_name_the_file(tmp_path: Path, mutate: Any, message: str) -> None:
    data = make("2026-01-01").to_dict()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message) as err:
        ProfileStore.load(path)
    assert str(path) in str(err.value)


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: [b\n")
    with pytest.raises(UserError, match="not valid YAML"):
        ProfileStore.load(path)
