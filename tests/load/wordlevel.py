"""A tiny word-level ``tokenizer.json`` built locally: one token per whitespace-separated word."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers


def write_word_tokenizer(folder: Path) -> Path:
    """``folder/tokenizer.json``: every word (known or not) is one token."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path
