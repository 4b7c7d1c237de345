"""Shared prefixes (``--shared-prefix-len N --prefix-groups K``): K distinct system prompts of N
tokens, one of which every request starts with, so that prefix caching gets the hits an
application with a few fixed system prompts gives it.

Requests pick their group round-robin (request ``i`` takes group ``i % K``), so every group is
used as soon as there are K requests, and each about as often. Token-id prompts start with N
random token ids; chat and text prompts with a system prompt of N words (about one token each,
see :data:`~autotune.load.images.WORDS`). Groups differ from each other from their first tokens
(words) on, and each is drawn from its own seed, apart from the requests' own random stream.
"""

from __future__ import annotations

import random
from dataclasses import replace

from autotune.errors import UserError
from autotune.load.request import Request

__all__ = ["distinct_codes", "group_of", "token_groups", "with_prefix", "word_groups"]


def group_of(index: int, groups: int) -> int:
    """The group of the ``index``-th request: round-robin."""
    return index % groups


def code_len(size: int, count: int) -> int:
    """The shortest code over ``size`` symbols that tells ``count`` things apart (1 unless there
    are very many)."""
    length = 1
    while size**length < count:
        length += 1
    return length


def distinct_codes(rng: random.Random, size: int, length: int, count: int) -> list[list[int]]:
    """``count`` distinct sequences of ``length`` numbers in ``range(size)``, in random order."""
    codes = []
    for code in rng.sample(range(size**length), count):
        digits = []
        for _ in range(length):
            code, digit = divmod(code, size)
            digits.append(digit)
        codes.append(digits)
    return codes


def _groups(*, size: int, length: int, groups: int, seed: int) -> list[list[int]]:
    """``groups`` distinct sequences of ``length`` numbers in ``range(size)``."""
    head = code_len(size, groups)
    if head > length:
        raise UserError(
            f"workload: {groups} prefix groups cannot differ in {length} tokens; "
            f"use --shared-prefix-len >= {head} or fewer --prefix-groups"
        )
    rng = random.Random(f"autotune-prefix-{seed}")
    return [
        code + [rng.randrange(size) for _ in range(length - head)]
        for code in distinct_codes(rng, size, head, groups)
    ]


def token_groups(*, low: int, high: int, length: int, groups: int, seed: int) -> list[list[int]]:
    """``groups`` distinct prefixes of ``length`` token ids in ``range(low, high)``."""
    return [
        [low + t for t in g]
        for g in _groups(size=high - low, length=length, groups=groups, seed=seed)
    ]


def word_groups(*, length: int, groups: int, seed: int) -> list[str]:
    """``groups`` distinct system prompts of ``length`` words."""
    from autotune.load.images import WORDS

    found = _groups(size=len(WORDS), length=length, groups=groups, seed=seed)
    return [" ".join(WORDS[i] for i in g) for g in found]


def with_prefix(request: Request, *, text: str, ids: list[int]) -> Request:
    """``request`` starting with a shared prefix: ``ids`` before a token-id prompt, ``text`` and
    a blank line before a text prompt, or ``text`` as the system message of a chat (before the
    text of a system message it already has)."""
    if request.messages is not None:
        messages = list(request.messages)
        first = messages[0] if messages else {}
        content = first.get("content")
        if first.get("role") == "system" and isinstance(content, str):
            messages[0] = {**first, "content": f"{text}\n\n{content}"}
        else:
            messages.insert(0, {"role": "system", "content": text})
        return replace(request, messages=messages)
    if isinstance(request.prompt, str):
        return replace(request, prompt=f"{text}\n\n{request.prompt}")
    return replace(request, prompt=[*ids, *(request.prompt or [])])
