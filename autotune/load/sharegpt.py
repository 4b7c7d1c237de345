"""A ShareGPT-format dataset (``--dataset FILE.json``; any name but ``*.jsonl``): a JSON list of
conversations::

    [{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}]

Each conversation gives one completion request: the prompt is its first human turn (``human``
or ``user``; the text under ``value`` or ``content``), sent as text, and it generates as many
tokens as the reply right after it (``gpt``, ``assistant`` or ``chatgpt``) has, counted by
:class:`~autotune.load.tokens.TokenCounter`, at most :data:`MAX_OUTPUT_TOKENS`. Conversations
without a human turn followed by a reply, or with an empty one, are skipped; a file with none
left is one clear line.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from autotune.errors import UserError
from autotune.load.dataset import MAX_DATASET_BYTES, error_reason, regular_file
from autotune.load.request import Request
from autotune.load.tokens import TokenCounter

__all__ = ["MAX_OUTPUT_TOKENS", "Exchange", "is_json_list", "read_exchanges", "sharegpt_requests"]

MAX_OUTPUT_TOKENS = 4096  # a few replies are huge; one must not dominate a benchmark
_HUMAN = frozenset({"human", "user"})
_REPLY = frozenset({"gpt", "assistant", "chatgpt"})
_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class Exchange:
    """The first human turn of a conversation and the reply to it."""

    prompt: str
    reply: str


def is_json_list(path: Path) -> bool:
    """Whether ``path`` holds a JSON list (ShareGPT) rather than JSON lines: its first
    non-blank character is ``[`` and its name does not end in ``.jsonl``."""
    regular_file(path, what="dataset", max_bytes=MAX_DATASET_BYTES)
    if path.suffix.lower() == ".jsonl":
        return False
    try:
        with path.open("rb") as f:
            while head := f.read(_SNIFF_BYTES):
                text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
                if text:
                    return text.startswith(b"[")
    except OSError as exc:
        raise UserError(f"dataset {path}: cannot read it ({error_reason(exc)})") from None
    return False


def read_exchanges(path: Path) -> list[Exchange]:
    """The usable conversations of a ShareGPT file, in file order."""
    regular_file(path, what="dataset", max_bytes=MAX_DATASET_BYTES)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset {path}: cannot read it ({error_reason(exc)})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise UserError(f"dataset {path}: not valid JSON ({msg})") from None
    if not isinstance(data, list):
        raise UserError(f"dataset {path}: expected a JSON list of conversations (ShareGPT)")
    exchanges = [e for e in map(_exchange, data) if e is not None]
    if not exchanges:
        raise UserError(
            f"dataset {path}: no conversation with a human turn followed by a reply "
            '(ShareGPT: [{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}])'
        )
    return exchanges


def _exchange(entry: object) -> Exchange | None:
    """The first human turn and its reply, or None when the entry has no such pair."""
    turns = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(turns, list):
        return None
    roles = [_role(t) for t in turns]
    first = next((i for i, r in enumerate(roles) if r in _HUMAN), None)
    if first is None or first + 1 >= len(turns) or roles[first + 1] not in _REPLY:
        return None
    prompt, reply = _value(turns[first]), _value(turns[first + 1])
    if not (isinstance(prompt, str) and prompt.strip() and isinstance(reply, str) and reply):
        return None
    return Exchange(prompt=prompt, reply=reply)


def _role(turn: object) -> str | None:
    if not isinstance(turn, dict):
        return None
    role = turn.get("from", turn.get("role"))
    return role.lower() if isinstance(role, str) else None


def _value(turn: dict[str, object]) -> object:
    return turn.get("value", turn.get("content"))


def sharegpt_requests(path: Path, *, counter: TokenCounter) -> list[Request]:
    """One completion request per usable conversation: the prompt as text, as many output tokens
    as the reply has (at most :data:`MAX_OUTPUT_TOKENS`); counted once per file version."""
    regular_file(path, what="dataset", max_bytes=MAX_DATASET_BYTES)
    info = path.stat()
    return [
        Request(prompt=prompt, messages=None, max_tokens=n, ignore_eos=True)
        for prompt, n in _counted(path, (info.st_mtime_ns, info.st_size), counter)
    ]


@functools.lru_cache(maxsize=4)
def _counted(
    path: Path, stamp: tuple[int, int], counter: TokenCounter
) -> tuple[tuple[str, int], ...]:
    """(prompt, output tokens) of each usable conversation."""
    exchanges = read_exchanges(path)
    outputs = counter.count_many([e.reply for e in exchanges])
    return tuple(
        (e.prompt, min(n, MAX_OUTPUT_TOKENS)) for e, n in zip(exchanges, outputs, strict=True)
    )
