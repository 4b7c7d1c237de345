"""The fake engine's prefix cache (vLLM's automatic prefix caching, simplified).

A prompt is hashed in full blocks of ``block_size`` tokens, each block's hash chained to the one
before (as vLLM does), so a block matches only when everything before it matches too. A request
admitted with caching on looks its blocks up: the leading blocks already cached need no prefill
(at least one token is always computed, so a fully cached prompt recomputes its last block).
Its blocks are cached from its admission on and pinned while it runs; blocks no running request
uses stay cached in the free part of the KV cache and the least recently used go first when it
shrinks. The counters follow vLLM's ``PrefixCacheStats``: prompt tokens looked up (``queries``)
and tokens found (``hits``), for first admissions only (a preempted request's re-admission is not
counted); with caching off nothing is looked up and both stay 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from autotune.testing._fake_prompt import IMAGE_PARTS, _image_url

MESSAGE_TOKENS = 4  # template tokens around each chat message (as ``prompt_parts`` counts them)


def block_hashes(keys: Sequence[Hashable], block_size: int) -> tuple[int, ...]:
    """The chained hashes of the prompt's full blocks (a partial last block has none)."""
    out: list[int] = []
    parent = 0
    for start in range(0, len(keys) - block_size + 1, block_size):
        parent = hash((parent, tuple(keys[start : start + block_size])))
        out.append(parent)
    return tuple(out)


def prompt_keys(body: dict[str, Any], chat: bool, image_tokens: int) -> list[Hashable]:
    """One key per prompt token, in order, counted as ``prompt_parts`` counts them: token ids,
    words of text, ``MESSAGE_TOKENS`` role tokens per chat message, ``image_tokens`` per image."""
    if not chat:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        texts = prompt if isinstance(prompt, list) else [prompt]
        return [word for text in texts for word in str(text).split()]
    keys: list[Hashable] = []
    for message in body["messages"]:
        keys += [("<role>", str(message.get("role")))] * MESSAGE_TOKENS
        content = message.get("content") or ""
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part.get("type") == "text":
                keys += str(part.get("text", "")).split()
            elif part.get("type") in IMAGE_PARTS:
                url = _image_url(part)
                keys += [("<image>", url, i) for i in range(image_tokens)]
    return keys


class PrefixCache:
    """Cached blocks (hash → running requests using it), least recently used first, and vLLM's
    two counters. Not thread-safe: the batch engine calls it under its lock."""

    def __init__(self) -> None:
        self.blocks: OrderedDict[int, int] = OrderedDict()
        self.unpinned = 0  # cached blocks no running request uses
        self.queries = 0  # vllm:prefix_cache_queries: prompt tokens looked up
        self.hits = 0  # vllm:prefix_cache_hits: of those, tokens found cached

    def lookup(self, hashes: Sequence[int], *, tokens: int, block_size: int, count: bool) -> int:
        """Cached tokens at the start of a prompt of ``tokens`` tokens (whole blocks, never the
        last token); ``count``: add them to the counters (a first admission)."""
        usable = max(tokens - 1, 0) // block_size
        found = 0
        for h in hashes[:usable]:
            if h not in self.blocks:
                break
            found += 1
        hit = found * block_size
        if count:
            self.queries += tokens
            self.hits += hit
        return hit

    def acquire(self, hashes: Sequence[int]) -> None:
        """A request admitted: its blocks cached (if not yet) and pinned, most recent last."""
        for h in hashes:
            users = self.blocks.get(h)
            if users == 0:
                self.unpinned -= 1
            self.blocks[h] = (users or 0) + 1
            self.blocks.move_to_end(h)

    def release(self, hashes: Sequence[int]) -> None:
        """A request left the batch: its blocks stay cached, unpinned once nobody uses them."""
        for h in hashes:
            if self.blocks.get(h, 0) > 0:
                self.blocks[h] -= 1
                if self.blocks[h] == 0:
                    self.unpinned += 1

    def evict(self, *, free_blocks: int) -> int:
        """Drop the least recently used unpinned blocks until they fit in ``free_blocks``;
        returns how many were dropped."""
        excess = self.unpinned - max(free_blocks, 0)
        if excess <= 0:
            return 0
        drop = [h for h, users in self.blocks.items() if users == 0][:excess]
        for h in drop:
            del self.blocks[h]
        self.unpinned -= len(drop)
        return len(drop)
