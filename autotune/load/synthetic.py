"""Synthetic requests of given sizes: token-id prompts, or chats with synthetic images.

Prompts differ from each other from their first token on (right after the shared prefix when
there is one, see :mod:`autotune.load.prefix`; within the first few tokens when there are more
prompts than token ids), so prefix caching cannot make a configuration look faster than it is
beyond the prefix the workload shares on purpose. Synthetic images all differ too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from autotune.errors import UserError
from autotune.load.prefix import code_len, distinct_codes, group_of, token_groups, word_groups
from autotune.load.request import Request

__all__ = ["MAX_TOKEN_ID", "MIN_TOKEN_ID", "image_requests", "token_requests"]

MIN_TOKEN_ID = 10  # skip the low ids, where special tokens (bos, eos, pad) usually live
MAX_TOKEN_ID = 32000


def token_requests(
    sizes: Sequence[tuple[int, int]],
    *,
    seed: int,
    vocab_size: int | None,
    shared_prefix_len: int = 0,
    prefix_groups: int = 1,
) -> list[Request]:
    """One token-id prompt per (input, output) size: the group's shared prefix, then a part
    that tells the prompt apart from all others, then random ids up to the input length."""
    hi = min(vocab_size or MAX_TOKEN_ID, MAX_TOKEN_ID)
    size = hi - MIN_TOKEN_ID
    if size < 2:
        raise UserError(f"workload: vocab_size {vocab_size} is too small for synthetic prompts")
    shared = shared_prefix_len
    head = code_len(size, len(sizes))
    if shared + head > min(n for n, _ in sizes):
        raise UserError(
            f"workload: {len(sizes)} distinct prompts need input_len >= {shared + head}"
            + (f" (with a {shared}-token shared prefix)" if shared else "")
        )
    groups = (
        token_groups(low=MIN_TOKEN_ID, high=hi, length=shared, groups=prefix_groups, seed=seed)
        if shared
        else [[]]
    )
    rng = random.Random(seed)
    requests = []
    for i, (code, (n_in, n_out)) in enumerate(
        zip(distinct_codes(rng, size, head, len(sizes)), sizes, strict=True)
    ):
        ids = [*groups[group_of(i, len(groups))], *(MIN_TOKEN_ID + c for c in code)]
        ids += [rng.randrange(MIN_TOKEN_ID, hi) for _ in range(n_in - len(ids))]
        requests.append(Request(prompt=ids, messages=None, max_tokens=n_out, ignore_eos=True))
    return requests


def image_requests(
    sizes: Sequence[tuple[int, int]],
    *,
    seed: int,
    images_per_request: tuple[int, int],
    image_size: tuple[int, int],
    shared_prefix_len: int = 0,
    prefix_groups: int = 1,
) -> list[Request]:
    """One chat per (input, output) size: synthetic images, then words of text (the input less
    the shared prefix, which comes first as a system message of that many words)."""
    from autotune.load.images import WORDS, synthetic_chats

    shared = shared_prefix_len
    rng = random.Random(seed)
    head = code_len(len(WORDS), len(sizes))
    words = [max(n - shared, head) for n, _ in sizes]
    chats = synthetic_chats(
        rng,
        distinct_codes(rng, len(WORDS), head, len(sizes)),
        n_words=max(words),
        images_per_request=images_per_request,
        image_size=image_size,
        seed=seed,
    )
    systems = word_groups(length=shared, groups=prefix_groups, seed=seed) if shared else []
    requests = []
    longest = max(words)
    for i, (chat, n_words, (_, n_out)) in enumerate(zip(chats, words, sizes, strict=True)):
        if n_words < longest:
            chat = [_shorten(chat[0], n_words)]
        if systems:
            chat = [{"role": "system", "content": systems[group_of(i, len(systems))]}, *chat]
        requests.append(Request(prompt=None, messages=chat, max_tokens=n_out, ignore_eos=True))
    return requests


def _shorten(message: dict[str, object], n_words: int) -> dict[str, object]:
    """A user message with the first ``n_words`` words of its text part (the last part)."""
    content = message["content"]
    assert isinstance(content, list)
    *images, text = content
    words = str(text["text"]).split()[:n_words]
    return {**message, "content": [*images, {"type": "text", "text": " ".join(words)}]}
