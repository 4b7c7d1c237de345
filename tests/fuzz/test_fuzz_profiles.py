"""Fuzzing the profile reader and exporter: whatever a file holds, ``ProfileStore.load`` returns
a valid profile or raises a one-line ``UserError`` (``ProfileError``), and every export of a
profile that loaded holds exactly its values (no injected ``vllm serve --config`` keys)."""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.errors import UserError
from autotune.profiles.export import CLUSTER_FORMATS, FORMATS, export, vllm_config
from autotune.profiles.store import Profile, ProfileStore
from tests.profiles.test_store import make

CORPUS = yaml.safe_load((Path(__file__).parent / "corpus_profiles.yaml").read_text())
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text with control characters, line separators, bidi overrides and YAML syntax mixed in.
HOSTILE = st.sampled_from(["\n", "\r", "\x00", "\x1b[31m", "\x85", "\u2028", "\u202e", ": ", "#"])
TEXT = st.lists(st.one_of(st.text(max_size=8), HOSTILE), max_size=6).map("".join)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 80), max_value=1 << 80),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)
PATHS = st.sampled_from(
    [
        "schema_version", "model", "model.name", "model.config_hash", "hardware.key",
        "hardware.count", "hardware.gpu", "vllm_version", "workload.signature", "objective",
        "vllm_args", "vllm_args.max_num_seqs", "vllm_args.gpu_memory_utilization", "extra_args",
        "metrics", "metrics.output_throughput", "startup", "provenance.created", "parallel",
        "parallel.tensor_parallel_size", "constraints", "memory", "warnings", "variants", "noise",
    ]
)  # fmt: skip


def with_values(changes: dict[str, Any]) -> dict[str, Any]:
    """A valid profile's data with each dotted path set to its value (parents made as needed)."""
    data = make("2026-01-01T00:00:00+00:00").to_dict()
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = data
        for name in parents:
            if not isinstance(target.get(name), dict):
                target[name] = {}
            target = target[name]
        target[last] = value
    return data


def load_text(text: str) -> Profile:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "shared.yaml")
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        return ProfileStore.load(path)


def load_or_refuse(text: str) -> Profile | None:
    """The profile, or None when refused with one clear line naming the file."""
    try:
        return load_text(text)
    except UserError as exc:
        message = str(exc)
        assert message.startswith(("/", "'/")) and "shared.yaml" in message, message
        assert len(message.splitlines()) == 1 and message.isprintable(), message
        return None


def check_exports(profile: Profile) -> None:
    """Every format loads back to exactly the profile's values."""
    for fmt in FORMATS:
        try:
            text = export(profile, fmt=fmt, model="org/m", command=["vllm", "serve"])
        except UserError as exc:  # a cluster export needs a released vLLM version or --image
            assert fmt in CLUSTER_FORMATS and len(str(exc).splitlines()) == 1, (fmt, exc)
            continue
        if fmt == "vllm-config":
            assert yaml.safe_load(text) == vllm_config(profile)
            assert all(line.startswith("#") for line in text.splitlines()[:2])
        elif fmt == "json":
            same = json.dumps(profile.to_dict(), sort_keys=True)  # NaN is not equal to itself
            assert json.dumps(json.loads(text), sort_keys=True) == same
        elif fmt == "cli":
            assert len(text.splitlines()) == 1 and shlex.split(text)[:3] == [
                "vllm",
                "serve",
                "org/m",
            ]
        else:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
            assert docs and all(isinstance(d, dict) for d in docs), fmt


@FUZZ
@given(changes=st.dictionaries(PATHS, VALUES, min_size=1, max_size=3), as_json=st.booleans())
def test_mutated_profiles_load_or_are_refused(changes: dict[str, Any], as_json: bool) -> None:
    data = with_values(changes)
    try:
        text = json.dumps(data) if as_json else yaml.safe_dump(data, allow_unicode=True)
    except ValueError:  # an integer beyond str()'s limit cannot even be written
        return
    profile = load_or_refuse(text)
    if profile is not None:
        check_exports(profile)


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text_loads_or_is_refused(text: str) -> None:
    assert load_or_refuse(text) is None  # nothing this short is a whole valid profile


@FUZZ
@given(
    lines=st.lists(
        st.sampled_from(
            ["&a [1, 2]", "*a", "!!python/name:os.system", "!!binary eA==", "!!set {a: null}",
             "<<: {a: 1}", "[[[[", "]]", "'", '"\\x85"', "2026-01-01", "0x" + "f" * 40, "1e999",
             ".nan", "- ", "? ", "|", "%YAML 1.1", "---", "..."]
        ),
        max_size=8,
    ),
    keys=st.lists(st.sampled_from(["metrics", "model", "a", "<<", "? x"]), max_size=8),
)  # fmt: skip
def test_yaml_syntax_soup_loads_or_is_refused(lines: list[str], keys: list[str]) -> None:
    pairs = [f"{k}: {v}" for k, v in zip(keys, lines, strict=False)]
    text = "\n".join([*pairs, " ".join(lines)])
    assert load_or_refuse(text) is None


@FUZZ
@given(data=VALUES)
def test_from_dict_on_arbitrary_data_returns_or_refuses(data: Any) -> None:
    try:
        Profile.from_dict(data, source="fuzz")
    except UserError as exc:
        assert str(exc).startswith("fuzz") and len(str(exc).splitlines()) == 1


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_corpus(case: dict[str, Any]) -> None:
    text = case["raw"] if "raw" in case else yaml.safe_dump(with_values(case["set"]))
    if "error" in case:
        with pytest.raises(UserError) as err:
            load_text(text)
        assert case["error"] in str(err.value) and len(str(err.value).splitlines()) == 1
    else:
        profile = load_text(text)
        for path, value in case["set"].items():
            got: Any = profile.to_dict()
            for name in path.split("."):
                got = got[name]
            assert got == (value if isinstance(value, (str, list)) else str(value))
        check_exports(profile)
