"""``--lengths-from``: synthetic prompts with the (input, output) lengths of a dataset file."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.load.request import Request
from autotune.load.workload import Workload, build_requests
from autotune.trial.soak import soak_requests
from tests.load.wordlevel import write_word_tokenizer

# (input tokens, output tokens) of each row of the JSONL file below.
PAIRS = [(3, 5), (20, 2), (8, 40), (50, 9)]


def _jsonl(path: Path) -> Path:
    rows = [{"prompt": list(range(10, 10 + n)), "output_len": out} for n, out in PAIRS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sizes(requests: list[Request]) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) of token-id requests."""
    out = []
    for r in requests:
        assert isinstance(r.prompt, list)
        out.append((len(r.prompt), r.max_tokens))
    return out


def test_drawn_sizes_come_from_the_file(tmp_path: Path) -> None:
    wl = Workload(lengths_from=_jsonl(tmp_path / "lengths.jsonl"), seed=5)
    requests = build_requests(wl, num_prompts=200, vocab_size=4096)
    drawn = Counter(_sizes(requests))
    assert set(drawn) == set(PAIRS)  # every pair is drawn, and nothing else
    assert all(r.ignore_eos and not r.is_chat for r in requests)
    assert len({tuple(r.prompt[:1]) for r in requests if isinstance(r.prompt, list)}) == 200
    assert build_requests(wl, num_prompts=200, vocab_size=4096) == requests
    other = build_requests(
        Workload(lengths_from=wl.lengths_from, seed=6), num_prompts=200, vocab_size=4096
    )
    assert _sizes(other) != _sizes(requests)
    assert wl.max_request_tokens == 59
    assert wl.mean_request_tokens == -(-sum(i + o for i, o in PAIRS) // len(PAIRS))


def test_sharegpt_lengths_use_the_tokenizer(tmp_path: Path) -> None:
    words = [(4, 7), (12, 3), (1, 25)]
    entries = [
        {
            "conversations": [
                {"from": "human", "value": " ".join(["q"] * i)},
                {"from": "gpt", "value": " ".join(["answer"] * o)},
            ]
        }
        for i, o in words
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(entries))
    tokenizer = write_word_tokenizer(tmp_path / "model")
    wl = Workload(lengths_from=path, tokenizer=tokenizer)
    assert set(_sizes(build_requests(wl, num_prompts=100, vocab_size=None))) == set(words)
    assert wl.max_request_tokens == 26
    estimated = Workload(lengths_from=path)  # no tokenizer: ~4 characters a token
    sizes = set(_sizes(build_requests(estimated, num_prompts=100, vocab_size=None)))
    assert (2, 12) in sizes  # "q q q q": 7 characters; 7 "answer"s: 48 with the spaces


def test_text_and_chat_rows_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [
        {"prompt": "one two three", "output_len": 4},
        {
            "messages": [
                {"role": "system", "content": "a b"},
                {"role": "user", "content": [{"type": "text", "text": "c d e"}]},
            ]
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    wl = Workload(lengths_from=path, output_len=9, tokenizer=write_word_tokenizer(tmp_path / "m"))
    assert set(_sizes(build_requests(wl, num_prompts=50, vocab_size=None))) == {(3, 4), (5, 9)}


def test_signature_prefix_and_round_trip(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "lengths.jsonl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    wl = Workload(lengths_from=path, input_len=64, output_len=9)
    assert wl.signature() == f"len-{digest}"
    prefixed = Workload(lengths_from=path, shared_prefix_len=6, prefix_groups=2)
    assert prefixed.signature() == f"len-{digest}-px6x2"
    assert Workload.from_dict(prefixed.to_dict()) == prefixed
    requests = build_requests(prefixed, num_prompts=40, vocab_size=4096)
    for r in requests:  # the prefix counts inside each input, which is at least prefix + 1
        assert isinstance(r.prompt, list) and len(r.prompt) >= 7
    assert {len(r.prompt) for r in requests if isinstance(r.prompt, list)} == {7, 20, 8, 50}
    assert len({tuple(r.prompt[:6]) for r in requests if isinstance(r.prompt, list)}) == 2
    assert prefixed.max_request_tokens == 59 and Workload(
        lengths_from=path, shared_prefix_len=30
    ).max_request_tokens == max(50 + 9, 31 + 40)


def test_lengths_from_checks(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "lengths.jsonl")
    with pytest.raises(UserError, match="lengths_from is for synthetic prompts"):
        Workload(lengths_from=path, dataset=path).validate()
    with pytest.raises(UserError, match="does not exist"):
        Workload(lengths_from=tmp_path / "missing.jsonl").validate()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{"prompt": 5}\n')
    with pytest.raises(UserError, match="line 2"):
        Workload(lengths_from=bad).validate()


def test_soak_sends_the_longest_drawn_requests_first(tmp_path: Path) -> None:
    wl = Workload(lengths_from=_jsonl(tmp_path / "lengths.jsonl"))
    requests = soak_requests(wl, {"max_num_seqs": 16}, vocab_size=4096)
    lengths = [len(r.prompt) for r in requests if isinstance(r.prompt, list)]
    assert len(lengths) == 16 and lengths == sorted(lengths, reverse=True)
    near = soak_requests(wl, {"max_num_seqs": 16, "max_model_len": 512}, vocab_size=4096)
    assert [len(r.prompt) for r in near[:4] if isinstance(r.prompt, list)] == [512 - 128 - 16] * 4


def test_image_chats_take_the_drawn_lengths_in_words(tmp_path: Path) -> None:
    wl = Workload(
        lengths_from=_jsonl(tmp_path / "lengths.jsonl"),
        images_per_request=(1, 1),
        image_size=(16, 16),
        shared_prefix_len=2,
    )
    requests = build_requests(wl, num_prompts=40, vocab_size=None)
    seen = set()
    for r in requests:
        assert r.messages is not None
        system, user = r.messages
        content = user["content"]
        assert isinstance(system["content"], str) and len(system["content"].split()) == 2
        assert isinstance(content, list) and content[0]["type"] == "image_url"
        seen.add((2 + len(content[-1]["text"].split()), r.max_tokens))
    assert seen == set(PAIRS)
