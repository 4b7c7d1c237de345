"""Shared prefixes: K distinct N-token system prompts, one per request, the rest unique."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.load.workload import Workload, build_requests
from tests.cli.test_cli import one_clear_line
from tests.conftest import run_autotune


def _common(a: list[int], b: list[int]) -> int:
    """How many leading tokens two prompts share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _prompts(wl: Workload, count: int, vocab_size: int | None = 4096) -> list[list[int]]:
    prompts = []
    for r in build_requests(wl, num_prompts=count, vocab_size=vocab_size):
        assert isinstance(r.prompt, list)
        prompts.append(r.prompt)
    return prompts


@pytest.mark.parametrize(("shared", "groups"), [(16, 4), (1, 1), (31, 3), (5, 60)])
def test_token_prompts_share_exactly_their_group_prefix(shared: int, groups: int) -> None:
    wl = Workload(input_len=32, output_len=3, shared_prefix_len=shared, prefix_groups=groups)
    prompts = _prompts(wl, 120)
    assert all(len(p) == 32 for p in prompts)
    assert len({tuple(p[:shared]) for p in prompts}) == groups
    for (i, a), (j, b) in combinations(enumerate(prompts), 2):
        same_group = i % groups == j % groups  # round-robin
        assert _common(a, b) == shared if same_group else _common(a, b) < shared
    assert _prompts(wl, 120) == prompts  # same seed, same prompts
    assert (
        _prompts(
            Workload(input_len=32, shared_prefix_len=shared, prefix_groups=groups, seed=1), 120
        )
        != prompts
    )


def test_no_prefix_prompts_are_unchanged() -> None:
    plain = _prompts(Workload(input_len=16, seed=3), 50)
    assert max(_common(a, b) for a, b in combinations(plain, 2)) == 0
    prefixed = _prompts(Workload(input_len=16, seed=3, shared_prefix_len=4), 50)
    assert all(p[:4] == prefixed[0][:4] for p in prefixed)


def test_chat_prompts_get_a_system_message_of_n_words() -> None:
    wl = Workload(
        input_len=40,
        shared_prefix_len=12,
        prefix_groups=3,
        images_per_request=(1, 1),
        image_size=(32, 32),
    )
    requests = build_requests(wl, num_prompts=9, vocab_size=None)
    systems, firsts = [], []
    for r in requests:
        assert r.messages is not None and len(r.messages) == 2
        system, user = r.messages
        assert system["role"] == "system" and isinstance(system["content"], str)
        assert len(system["content"].split()) == 12
        systems.append(system["content"])
        content = user["content"]
        assert isinstance(content, list) and content[0]["type"] == "image_url"
        words = content[-1]["text"].split()
        assert len(words) == 40 - 12
        firsts.append(words[0])
    assert len(set(systems)) == 3 and systems[:3] == systems[3:6]
    assert len(set(firsts)) == 9  # the rest differs from its first word on


def test_datasets_get_a_system_prompt_per_group(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "plain text"},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "x"}]},
        {"prompt": [11, 12, 13]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = Workload(dataset=path, shared_prefix_len=5, prefix_groups=2)
    r0, r1, r2, r3 = build_requests(wl, num_prompts=4, vocab_size=1000)
    assert isinstance(r0.prompt, str)
    first, rest = r0.prompt.split("\n\n")
    assert len(first.split()) == 5 and rest == "plain text"
    assert r1.messages is not None and r1.messages[0]["role"] == "system"
    second = r1.messages[0]["content"]
    assert isinstance(second, str) and len(second.split()) == 5 and second != first
    assert r2.messages is not None and r2.messages[0] == {
        "role": "system",
        "content": f"{first}\n\nown",
    }
    assert isinstance(r3.prompt, list) and len(r3.prompt) == 8 and r3.prompt[5:] == [11, 12, 13]
    assert wl.signature().endswith("-out128-px5x2")
    assert wl.max_request_tokens == Workload(dataset=path).max_request_tokens + 5


def test_signature_and_round_trip() -> None:
    plain = Workload(input_len=64)
    prefixed = Workload(input_len=64, shared_prefix_len=32, prefix_groups=4)
    assert plain.signature() == "in64-out128"
    assert prefixed.signature() == "in64-out128-px32x4"
    assert Workload(input_len=64, shared_prefix_len=32).signature() == "in64-out128-px32x1"
    assert Workload.from_dict(prefixed.to_dict()) == prefixed
    old = {
        k: v
        for k, v in plain.to_dict().items()
        if k not in {"shared_prefix_len", "prefix_groups", "lengths_from", "tokenizer"}
    }
    assert Workload.from_dict(old) == plain
    with pytest.raises(UserError, match="shared_prefix_len must be an integer"):
        Workload.from_dict({"shared_prefix_len": "8"})


@pytest.mark.parametrize(
    ("workload", "needle"),
    [
        (Workload(input_len=8, shared_prefix_len=8), "must be below input_len"),
        (Workload(shared_prefix_len=-1), "shared_prefix_len must be at least 0"),
        (Workload(shared_prefix_len=4, prefix_groups=0), "prefix_groups must be at least 1"),
        (Workload(prefix_groups=3), "needs a shared_prefix_len"),
    ],
)
def test_bad_prefixes_are_one_line(workload: Workload, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        workload.validate()


def test_groups_must_fit_in_the_prefix() -> None:
    # 20 usable token ids tell at most 20 one-token prefixes apart.
    wl = Workload(input_len=8, shared_prefix_len=1, prefix_groups=21)
    with pytest.raises(UserError, match="cannot differ in 1 tokens"):
        build_requests(wl, num_prompts=30, vocab_size=30)
    assert len(_prompts(wl, 30, vocab_size=None)) == 30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--input-len", "64", "--shared-prefix-len", "64"], "must be below input_len"),
        (["--prefix-groups", "4"], "needs a shared_prefix_len"),
        (["--prefix-groups", "0"], "--prefix-groups"),
        (["--lengths-from", "no-such-file.jsonl"], "does not exist"),
    ],
)
def test_cli_workload_errors_are_one_line(args: list[str], needle: str, model_dir: Path) -> None:
    common = ["tune", str(model_dir), "--gpu", "L4:24", "--vllm-cmd", "no-such-vllm serve"]
    one_clear_line(run_autotune(*common, *args, timeout=60), needle)


def test_cli_checks_lengths_against_the_context(tmp_path: Path, model_dir: Path) -> None:
    """The longest drawn request must fit --max-model-len; good workload files pass every check
    up to the engine command."""
    lengths = tmp_path / "long.jsonl"
    lengths.write_text(json.dumps({"prompt": list(range(10, 5010)), "output_len": 10}) + "\n")
    common = ["tune", str(model_dir), "--gpu", "L4:24", "--vllm-cmd", "no-such-vllm serve"]
    too_long = run_autotune(*common, "--lengths-from", str(lengths), "--max-model-len", "4096")
    one_clear_line(too_long, "its longest request in long.jsonl, input + output = 5010")
    data = Path(__file__).resolve().parents[1] / "data"
    for args in (
        ["--dataset", str(data / "sharegpt_small.json"), "--shared-prefix-len", "64"],
        ["--lengths-from", str(data / "sharegpt_small.json"), "--prefix-groups", "1"],
        ["--dataset", str(data / "trace_small.jsonl")],
    ):
        one_clear_line(run_autotune(*common, *args, timeout=60), "not found")
