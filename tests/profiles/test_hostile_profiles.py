"""A profile from a shared folder is hostile input: it cannot inject keys into an export, hang
the reader, escape the store, or stop the other models' profiles from loading (issue 16)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.errors import ProfileError, UserError
from autotune.profiles.build import Chosen, build_profile
from autotune.profiles.export import FORMATS, export, vllm_config
from autotune.profiles.safeyaml import MAX_BYTES
from autotune.profiles.store import ProfileStore
from tests.profiles.test_store import make

INJECTED = "in512\ntrust-remote-code: true\nhost: 0.0.0.0\nchat-template: /etc/passwd"


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_newline_in_the_signature_is_refused_on_load_naming_the_file(tmp_path: Path) -> None:
    data = make("2026-01-01").to_dict()
    data["workload"]["signature"] = INJECTED
    path = write(tmp_path / "shared.yaml", data)
    with pytest.raises(ProfileError, match=r"workload\.signature holds the control") as err:
        ProfileStore.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_refuses_a_profile_with_a_control_character(fmt: str) -> None:
    profile = make("2026-01-01")
    profile = replace(profile, workload=profile.workload | {"signature": INJECTED})
    with pytest.raises(ProfileError, match=r"workload\.signature"):
        export(profile, fmt=fmt, model="m", command=["vllm", "serve"])


def test_vllm_config_export_holds_exactly_the_profile_keys() -> None:
    """Odd but printable text (YAML and comment syntax, non-ASCII) stays inside its value."""
    profile = make("2026-01-01")
    odd = "in512 # x: 'y' \"z\" host: 0.0.0.0 – ü"
    profile = replace(profile, workload=profile.workload | {"signature": odd})
    profile = replace(profile, model=profile.model | {"name": "org--名前: x"})
    text = export(profile, fmt="vllm-config", model="./my model: x", command=[])
    assert yaml.safe_load(text) == vllm_config(profile)
    assert all(line.startswith("#") for line in text.splitlines()[:2]) and text.isascii()
    assert not any(line.startswith(("host", "trust")) for line in text.splitlines())
    with pytest.raises(UserError, match="control character"):
        export(profile, fmt="vllm-config", model="m\u2028host: 1", command=[])


def test_a_bad_file_is_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ProfileStore(tmp_path)
    good = store.save(make("2026-01-01"))
    write(tmp_path / "broken.yaml", "a: [")
    bad_flags = make("2026-01-02").to_dict() | {"extra_args": ["--trust-remote-code"]}
    write(tmp_path / "other" / "flags.yaml", bad_flags)
    with caplog.at_level(logging.WARNING):
        assert [p for p, _ in store.find(model_name="m")] == [good]
        assert [p for p, _ in store.all()] == [good]  # warned once per file, not per call
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and all("\n" not in w for w in warned)
    assert any("broken.yaml" in w for w in warned) and any("may not carry" in w for w in warned)


def test_a_file_name_with_a_newline_is_shown_escaped(tmp_path: Path) -> None:
    path = write(tmp_path / "x\ntrust-remote-code: true.yaml", "a: [")
    with pytest.raises(ProfileError, match="not valid YAML") as err:
        ProfileStore.load(path)
    assert len(str(err.value).splitlines()) == 1 and "\\n" in str(err.value)


@pytest.mark.timeout(30)  # a hang guard: before the fix, reading the FIFO never returned
def test_a_fifo_or_device_is_refused_not_read(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    good = store.save(make("2026-01-01"))
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    (tmp_path / "dir.yaml").mkdir()
    (tmp_path / "link.yaml").symlink_to(good)  # a symlink to a regular file is fine
    for name in ("fifo.yaml", "zero.yaml"):
        with pytest.raises(ProfileError, match="not a regular file"):
            ProfileStore.load(tmp_path / name)
    assert sorted(p.name for p, _ in store.all()) == sorted([good.name, "link.yaml"])


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "big.yaml", "a: " + "x" * MAX_BYTES)
    with pytest.raises(ProfileError, match="larger than"):
        ProfileStore.load(path)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BOMB, "anchors and aliases"),
        ("metrics: &m {a: 1}\nstartup: *m\n", "anchors and aliases"),
        ("a: !!python/object/apply:os.system ['true']\n", "is not allowed"),
        ("a: !!binary aGVsbG8=\n", "is not allowed"),
        ("a: !!set {x: null}\n", "is not allowed"),
        ("a: !custom x\n", "is not allowed"),
        ("a:\n  <<: {b: 1}\n", "merge keys"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper"),
        ("a: " + "9" * 5000 + "\n", "not valid YAML"),
        ("a: 1\n--- \nb: 2\n", "not valid YAML"),
    ],
)
def test_yaml_beyond_plain_data_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "x.yaml", text)
    with pytest.raises(ProfileError, match=message) as err:
        ProfileStore.load(path)
    assert str(path) in str(err.value)


def test_an_unquoted_date_loads_as_text(tmp_path: Path) -> None:
    text = yaml.safe_dump(make("X").to_dict()).replace("created: X", "created: 2026-01-02")
    profile = ProfileStore.load(write(tmp_path / "p.yaml", text))
    assert profile.created == "2026-01-02"
    assert export(profile, fmt="json", model="m", command=[]).count("2026-01-02") == 1


def test_a_leftover_temp_file_never_wins(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    path = store.save(make("2026-01-01"))
    newer = make("2099-01-01", max_num_seqs=1)
    write(path.parent / ".tmp-k2j3h4.yaml", newer.to_dict())
    assert [p for p, _ in store.find(model_name="m")] == [path]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model.name", "m\x1b[31m", "model.name holds the control"),
        ("model.name", 5, "model.name must be non-empty text"),
        ("model.name", "", "model.name must be non-empty text"),
        ("model.name", "m" * 300, "model.name is longer than"),
        ("hardware.gpu", "L4\x00", "hardware.gpu holds the control"),
        ("hardware.count", "two", "hardware.count must be an integer"),
        ("objective", ["throughput"], "objective must be non-empty text"),
        ("vllm_version", "0.33\u2028", "vllm_version holds the control"),
        ("extra_args", ["--dtype", "bfloat16\ntrust-remote-code: true"], r"extra_args\[1\]"),
        ("warnings", ["fine", "\u202eevil"], r"warnings\[1\] holds the control"),
        ("provenance.log", "x" * 70000, "provenance.log is longer than"),
        ("metrics.big", 1 << 70, "integer outside 64 bits"),
        ("metrics", {"a\nb": 1}, "a key of metrics holds the control"),
        ("metrics", {1: 1}, "key that is not text"),
        ("schema_version", True, "schema_version True is not supported"),
        ("variants", [{"picks": "throughput", "vllm_args": {}}], "picks must be a list"),
    ],
)
def test_bad_fields_are_refused_naming_the_file_and_field(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    data = make("2026-01-01").to_dict()
    *parents, last = field.split(".")
    target = data
    for name in parents:
        target = target[name]
    target[last] = value
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=False))
    with pytest.raises(ProfileError, match=message) as err:
        ProfileStore.load(path)
    assert str(path) in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("name", ["..", ".", "../../etc", "/abs", "a/../..", "", "-rf", ".hidden"])
def test_a_model_name_never_leaves_the_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "profiles"
    store = ProfileStore(root)
    profile = make("2026-01-01")
    profile = replace(profile, model=profile.model | {"name": name})
    path = store.path_for(profile)
    assert path.resolve().is_relative_to(root.resolve()) and len(path.relative_to(root).parts) == 3
    assert not any(part.startswith((".", "-")) for part in path.relative_to(root).parts)
    if name:
        assert store.save(profile) == path and path.is_file()


def test_distinct_names_get_distinct_paths_and_plain_ones_keep_theirs(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    base = make("2026-01-01")
    names = ["模型", "模式", "Модель", "a/b", "a-b", "a b", "a--b", "org--Llama-3.1-8B"]
    paths = [store.path_for(replace(base, model=base.model | {"name": n})) for n in names]
    assert len(set(paths)) == len(names)
    assert paths[-1] == tmp_path / "org--Llama-3.1-8B/l4-24gib-x1" / (
        "in512-out128--throughput--vllm-0.33.0.yaml"
    )
    assert paths[names.index("a-b")].parts[-3] == "a-b"
    # the file name's parts are joined with --: a -- inside one part cannot fake another split
    one = replace(base, workload=base.workload | {"signature": "a--b"}, objective="c")
    two = replace(base, workload=base.workload | {"signature": "a"}, objective="b--c")
    assert store.path_for(one) != store.path_for(two)


def test_building_a_profile_validates_it() -> None:
    chosen = Chosen(number=3, vllm_args={"max_num_seqs": 8}, vllm_version="0.33.0", metrics={},
                    startup={}, log=None, study="s", num_prompts=8)  # fmt: skip
    good = make("2026-01-01")

    def build(**model: Any) -> Any:
        return build_profile(
            model=good.model | model, hardware=good.hardware, workload=good.workload,
            objective="throughput", extra_args=[], chosen=chosen, storage_given=False,
            state=None,
        )  # fmt: skip

    assert build().model_name == "m"
    with pytest.raises(UserError, match=r"trial 3: model\.name holds the control"):
        build(name="m\nx")
