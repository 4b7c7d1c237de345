"""ShareGPT datasets, JSONL timestamps and token counting."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from autotune.errors import UserError
from autotune.load.sharegpt import MAX_OUTPUT_TOKENS, is_json_list, read_exchanges
from autotune.load.tokens import TokenCounter, estimate_tokens, tokenizer_file
from autotune.load.workload import Workload, build_requests
from tests.load.wordlevel import write_word_tokenizer


def _turn(role: str, text: str, *, key: str = "from", value: str = "value") -> dict[str, str]:
    return {key: role, value: text}


def _sharegpt(path: Path, entries: list[object], *, prefix: str = "") -> Path:
    path.write_text(prefix + json.dumps(entries), encoding="utf-8")
    return path


def _conv(*turns: dict[str, str]) -> dict[str, object]:
    return {"conversations": list(turns)}


def test_turns_are_paired_by_role(tmp_path: Path) -> None:
    entries: list[object] = [
        _conv(_turn("human", "first question"), _turn("gpt", "an answer of words")),
        _conv(_turn("system", "be brief"), _turn("human", "after system"), _turn("gpt", "ok")),
        _conv(
            _turn("user", "chat roles", key="role", value="content"),
            _turn("assistant", "sure thing", key="role", value="content"),
        ),
        _conv(_turn("gpt", "greeting"), _turn("human", "late human"), _turn("GPT", "late reply")),
        _conv(_turn("human", "no reply")),  # skipped: nothing follows
        _conv(_turn("human", "twice"), _turn("human", "again"), _turn("gpt", "x")),  # skipped
        _conv(_turn("human", "  "), _turn("gpt", "empty prompt")),  # skipped
        _conv(_turn("human", "empty reply"), _turn("gpt", "")),  # skipped
        {"conversations": "not a list"},
        "not an object",
        _conv(
            _turn("human", "multi"),
            _turn("chatgpt", "one"),
            _turn("human", "two"),
            _turn("gpt", "3"),
        ),
    ]
    path = _sharegpt(tmp_path / "sg.json", entries)
    pairs = [(e.prompt, e.reply) for e in read_exchanges(path)]
    assert pairs == [
        ("first question", "an answer of words"),
        ("after system", "ok"),
        ("chat roles", "sure thing"),
        ("late human", "late reply"),
        ("multi", "one"),
    ]


def test_requests_generate_the_reply_length(tmp_path: Path) -> None:
    reply = "word " * 30
    huge = "word " * (MAX_OUTPUT_TOKENS + 50)
    path = _sharegpt(
        tmp_path / "sg.json",
        [
            _conv(_turn("human", "hello world"), _turn("gpt", reply)),
            _conv(_turn("human", "q"), _turn("gpt", huge)),
        ],
    )
    estimated = build_requests(Workload(dataset=path), num_prompts=3, vocab_size=None)
    assert [r.prompt for r in estimated] == ["hello world", "q", "hello world"]
    assert [r.max_tokens for r in estimated][:2] == [estimate_tokens(reply), MAX_OUTPUT_TOKENS]
    assert all(r.ignore_eos and not r.is_chat and r.timestamp is None for r in estimated)
    tokenizer = write_word_tokenizer(tmp_path / "model")
    counted = build_requests(
        Workload(dataset=path, tokenizer=tokenizer), num_prompts=2, vocab_size=None
    )
    assert [r.max_tokens for r in counted] == [30, MAX_OUTPUT_TOKENS]
    wl = Workload(dataset=path, tokenizer=tokenizer, output_len=7)
    assert wl.max_images == 0
    assert wl.max_request_tokens == 1 + MAX_OUTPUT_TOKENS  # "q": one word
    assert wl.mean_request_tokens == -(-(2 + 30 + 1 + MAX_OUTPUT_TOKENS) // 2)
    wl.validate()


def test_json_list_or_json_lines(tmp_path: Path) -> None:
    listed = _sharegpt(tmp_path / "a.json", [], prefix="\ufeff \n\t")
    assert is_json_list(listed)
    lines = tmp_path / "b.jsonl"
    lines.write_text('{"prompt": "[not a list]"}\n')
    assert not is_json_list(lines)
    named = _sharegpt(tmp_path / "c.jsonl", [])  # a list, but named as JSON lines
    assert not is_json_list(named)
    with pytest.raises(UserError, match="line 1: expected a JSON object"):
        Workload(dataset=named).validate()
    assert build_requests(Workload(dataset=lines), num_prompts=1, vocab_size=None)[0].prompt == (
        "[not a list]"
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[", "not valid JSON"),
        ("[]", "no conversation with a human turn followed by a reply"),
        ('[{"conversations": [{"from": "gpt", "value": "x"}]}]', "no conversation"),
        ("[" * 100_000, "not valid JSON"),
        (b"[\xff]", "cannot read it"),
    ],
)
def test_bad_sharegpt_files_are_one_line(tmp_path: Path, text: str | bytes, needle: str) -> None:
    path = tmp_path / "bad.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(UserError, match=needle) as err:
        Workload(dataset=path).validate()
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_jsonl_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    rows = [{"prompt": "a", "timestamp": 0}, {"prompt": "b", "timestamp": 1.5}, {"prompt": "c"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    requests = build_requests(Workload(dataset=path), num_prompts=3, vocab_size=None)
    assert [r.timestamp for r in requests] == [0.0, 1.5, None]
    assert isinstance(requests[0].timestamp, float)


@pytest.mark.parametrize("bad", ["-1", '"3"', "true", "NaN", "Infinity", "[1]"])
def test_bad_timestamp_names_the_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(f'{{"prompt": "a"}}\n\n{{"prompt": "b", "timestamp": {bad}}}\n')
    with pytest.raises(UserError, match=r"line 3: timestamp must be a number of seconds >= 0"):
        Workload(dataset=path).validate()


def test_tokenizer_file_of_a_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert tokenizer_file(str(model)) is None  # no such directory
    model.mkdir()
    assert tokenizer_file(str(model)) is None  # no tokenizer.json in it
    path = write_word_tokenizer(model)
    assert tokenizer_file(str(model)) == path
    assert tokenizer_file("org/some-hub-model") is None
    assert TokenCounter(path).count_many(["a b c", "", "hello"]) == [3, 1, 1]
    assert TokenCounter().count_many(["abcde", "", "abcd"]) == [2, 1, 1]


def test_broken_tokenizer_falls_back_to_the_estimate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "tokenizer.json"
    broken.write_text('{"model": "nothing a tokenizer reads"}')
    counter = TokenCounter(broken)
    with caplog.at_level(logging.WARNING):
        assert counter.count("one two three four five") == estimate_tokens(
            "one two three four five"
        )
        assert not counter.exact
    assert any("cannot be read" in r.getMessage() for r in caplog.records)
