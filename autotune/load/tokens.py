"""Token counts of dataset text: the model's own ``tokenizer.json`` when it has one (the
``tokenizers`` package, imported only when a count is needed), else an estimate of one token per
:data:`CHARS_PER_TOKEN` characters, rounded up, at least 1. These counts size requests before
they are sent (ShareGPT replies, ``--lengths-from``); the engine's ``usage`` counts what was sent.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["CHARS_PER_TOKEN", "TokenCounter", "estimate_tokens", "tokenizer_file"]

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 4  # English text in common BPE vocabularies: about 4 characters a token
MAX_TOKENIZER_BYTES = 256 << 20


def tokenizer_file(model: str) -> Path | None:
    """``MODEL/tokenizer.json`` when MODEL is a local directory that has one, else None."""
    try:
        path = Path(os.path.expanduser(model)) / "tokenizer.json"
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def estimate_tokens(text: str) -> int:
    """About one token per :data:`CHARS_PER_TOKEN` characters, rounded up, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens with ``tokenizer`` (a ``tokenizer.json``) or, without one, estimates them."""

    tokenizer: Path | None = None

    @property
    def exact(self) -> bool:
        """Whether counts come from a tokenizer rather than the estimate."""
        return self.tokenizer is not None and _load(self.tokenizer) is not None

    def count(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens added), at least 1."""
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        """Tokens of each text, at least 1 each; one batch through the tokenizer."""
        tok = None if self.tokenizer is None else _load(self.tokenizer)
        if tok is None:
            return [estimate_tokens(t) for t in texts]
        encodings = tok.encode_batch(texts, add_special_tokens=False)
        return [max(1, len(e.ids)) for e in encodings]


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> Tokenizer | None:
    """The tokenizer at ``path``, or None (said once) when it cannot be read."""
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise ValueError(f"larger than {MAX_TOKENIZER_BYTES >> 20} MiB")
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path))
    except Exception as exc:  # a missing, broken or too new tokenizer.json: estimate instead
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log.warning(
            f"tokenizer {path} cannot be read ({reason}); token counts are estimated at "
            f"{CHARS_PER_TOKEN} characters a token"
        )
        return None
