"""Workload description, synthetic prompts and JSONL datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.workload import Request, Workload, build_requests


def _write(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_synthetic_prompts_are_exact_distinct_and_deterministic() -> None:
    w = Workload(input_len=16, output_len=7, seed=3)
    requests = build_requests(w, num_prompts=50, vocab_size=4096)
    assert len(requests) == 50
    for r in requests:
        assert isinstance(r.prompt, list) and len(r.prompt) == 16
        assert all(10 <= t < 4096 for t in r.prompt)
        assert (r.messages, r.max_tokens, r.ignore_eos, r.is_chat) == (None, 7, True, False)
    firsts = [r.prompt[0] for r in requests if isinstance(r.prompt, list)]
    assert len(set(firsts)) == 50  # no shared prefix for the prefix cache
    assert build_requests(w, num_prompts=50, vocab_size=4096) == requests
    other_seed = build_requests(Workload(input_len=16, seed=4), num_prompts=50, vocab_size=4096)
    assert [r.prompt for r in other_seed] != [r.prompt for r in requests]


def test_vocab_bounds_and_many_prompts() -> None:
    big = build_requests(Workload(input_len=4), num_prompts=20, vocab_size=None)
    assert all(10 <= t < 32000 for r in big if isinstance(r.prompt, list) for t in r.prompt)
    capped = build_requests(Workload(input_len=4), num_prompts=20, vocab_size=200_000)
    assert all(t < 32000 for r in capped if isinstance(r.prompt, list) for t in r.prompt)
    # 100 prompts from 20 usable ids: they differ within the first two tokens instead.
    many = build_requests(Workload(input_len=3), num_prompts=100, vocab_size=30)
    prefixes = {tuple(r.prompt[:2]) for r in many if isinstance(r.prompt, list)}
    assert len(prefixes) == 100
    with pytest.raises(UserError, match="input_len >= 2"):
        build_requests(Workload(input_len=1), num_prompts=100, vocab_size=30)
    with pytest.raises(UserError, match="vocab_size"):
        build_requests(Workload(), num_prompts=1, vocab_size=11)


def test_signature_and_round_trip(tmp_path: Path) -> None:
    assert Workload().signature() == "in512-out128"
    assert Workload(input_len=1024, output_len=64, seed=9).signature() == "in1024-out64"
    ds = _write(tmp_path / "d.jsonl", {"prompt": "hi"})
    digest = hashlib.sha256(ds.read_bytes()).hexdigest()[:8]
    assert Workload(dataset=ds).signature() == f"ds-{digest}-out128"
    for w in (Workload(), Workload(input_len=8, output_len=2, num_prompts=5, dataset=ds, seed=1)):
        assert Workload.from_dict(w.to_dict()) == w
    assert Workload.from_dict({}) == Workload()
    assert Workload.from_dict({"dataset": str(ds)}).dataset == ds
    with pytest.raises(UserError, match="unknown key"):
        Workload.from_dict({"input_length": 5})
    with pytest.raises(UserError, match="input_len must be an integer"):
        Workload.from_dict({"input_len": "512"})


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (Workload(input_len=0), "input_len must be at least 1"),
        (Workload(output_len=0), "output_len must be at least 1"),
        (Workload(num_prompts=0), "num_prompts must be at least 1"),
        (Workload(dataset=Path("/nonexistent/d.jsonl")), "does not exist"),
    ],
)
def test_validate(workload: Workload, message: str) -> None:
    with pytest.raises(UserError, match=message):
        workload.validate()


def test_dataset_rows_cycle_with_output_len_fallback(tmp_path: Path) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "hello"}]
    ds = _write(
        tmp_path / "d.jsonl",
        {"prompt": "one", "output_len": 5},
        "",
        {"messages": messages},
        {"prompt": [11, 12, 13]},
    )
    w = Workload(output_len=9, dataset=ds)
    w.validate()
    requests = build_requests(w, num_prompts=5, vocab_size=None)
    assert requests[0] == Request(prompt="one", messages=None, max_tokens=5, ignore_eos=True)
    assert requests[1] == Request(prompt=None, messages=messages, max_tokens=9, ignore_eos=True)
    assert requests[1].is_chat
    assert requests[2].prompt == [11, 12, 13]
    assert requests[3:] == requests[:2]
    assert len(build_requests(w, num_prompts=2, vocab_size=None)) == 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (['{"prompt": "a"}', '{"prompt": '], "line 2: not valid JSON"),
        (["[1, 2]"], "line 1: expected a JSON object"),
        ([{"prompt": "a", "messages": []}], "line 1: expected exactly one of"),
        ([{"output_len": 3}], "line 1: expected exactly one of"),
        ([{"prompt": ""}], "line 1: 'prompt' must be"),
        ([{"messages": [{"content": "x"}]}], "line 1: 'messages' must be"),
        ([{"prompt": "a"}, {"prompt": "b", "output_len": 0}], "line 2: output_len must be"),
        ([{"prompt": "a", "output_len": True}], "line 1: output_len must be"),
        ([""], "has no rows"),
    ],
)
def test_bad_dataset_names_file_and_line(tmp_path: Path, rows: list[object], message: str) -> None:
    ds = _write(tmp_path / "bad.jsonl", *rows)
    with pytest.raises(UserError, match=message) as info:
        Workload(dataset=ds).validate()
    assert str(ds) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError):
        build_requests(Workload(dataset=ds), num_prompts=1, vocab_size=None)


def test_unreadable_dataset(tmp_path: Path) -> None:
    ds = tmp_path / "latin1.jsonl"
    ds.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(UserError, match="cannot read it"):
        Workload(dataset=ds).validate()
    with pytest.raises(UserError, match="cannot read it"):
        Workload(dataset=tmp_path).signature()
