"""Dataset files as requests and as token sizes.

``--dataset FILE`` is a ShareGPT JSON list when its first character is ``[`` and its name does
not end in ``.jsonl`` (see :mod:`autotune.load.sharegpt`), JSON lines otherwise
(:mod:`autotune.load.dataset`). The same files give ``--lengths-from`` its (input tokens, output
tokens) pairs: an input is the length of a token-id prompt, or the tokens of the prompt's text
(all text parts of all messages for a chat; images are not counted); an output is the request's
``max_tokens``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from pathlib import Path

from autotune.load.dataset import load_dataset, read_rows
from autotune.load.request import Request
from autotune.load.sharegpt import is_json_list, sharegpt_requests
from autotune.load.tokens import TokenCounter

__all__ = ["MAX_TOKENS", "draw_sizes", "load_requests", "max_dataset_images", "token_sizes"]

MAX_TOKENS = 1 << 20  # an input or output drawn by --lengths-from: at most --input-len's limit

Size = tuple[int, int]
"""A request's (input tokens, output tokens)."""


def load_requests(path: Path, *, default_output_len: int, counter: TokenCounter) -> list[Request]:
    """The requests of a ShareGPT or JSONL dataset, in file order."""
    if is_json_list(path):
        return sharegpt_requests(path, counter=counter)
    return load_dataset(path, default_output_len=default_output_len)


def max_dataset_images(path: Path) -> int:
    """The most images one row of a dataset carries (ShareGPT rows carry none)."""
    if is_json_list(path):
        return 0
    from autotune.load.images import image_paths

    return max(len(image_paths(row, where)) for where, row in read_rows(path))


def token_sizes(path: Path, *, default_output_len: int, counter: TokenCounter) -> tuple[Size, ...]:
    """The (input, output) tokens of each request of a dataset file, each at most
    :data:`MAX_TOKENS`; read once per file version."""
    info = path.stat() if path.is_file() else None
    stamp = (info.st_mtime_ns, info.st_size) if info is not None else None
    return _sizes(path, stamp, default_output_len, counter)


@functools.lru_cache(maxsize=8)
def _sizes(
    path: Path, stamp: tuple[int, int] | None, default_output_len: int, counter: TokenCounter
) -> tuple[Size, ...]:
    requests = load_requests(path, default_output_len=default_output_len, counter=counter)
    texts = {i: text for i, r in enumerate(requests) if (text := _text(r)) is not None}
    counted = dict(zip(texts, counter.count_many(list(texts.values())), strict=True))
    sizes = []
    for i, r in enumerate(requests):
        n = len(r.prompt) if isinstance(r.prompt, list) else counted.get(i, 1)
        sizes.append((min(n, MAX_TOKENS), min(r.max_tokens, MAX_TOKENS)))
    return tuple(sizes)


def _text(request: Request) -> str | None:
    """The text of a request's prompt (None for token ids): all text of all messages."""
    if isinstance(request.prompt, str):
        return request.prompt
    parts: list[str] = []
    for message in request.messages or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and _is_text(p)]
    return "\n".join(parts) if request.messages is not None else None


def _is_text(part: dict[str, object]) -> bool:
    return part.get("type") == "text" and isinstance(part.get("text"), str)


def draw_sizes(sizes: Sequence[Size], *, count: int, seed: int, min_input: int) -> list[Size]:
    """``count`` sizes drawn with replacement from ``sizes`` (seeded: the same seed, the same
    draws), each input at least ``min_input``."""
    rng = random.Random(f"autotune-lengths-{seed}")
    return [(max(i, min_input), o) for i, o in (rng.choice(sizes) for _ in range(count))]
