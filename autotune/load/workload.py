"""What the benchmark sends: a workload description and the requests built from it.

Synthetic prompts are lists of token ids, so no tokenizer is needed and every prompt has exactly
``input_len`` tokens. With ``images_per_request`` every request is instead a chat request with
synthetic images (see :mod:`autotune.load.images`) followed by about ``input_len`` words of text.
A JSONL dataset can be used instead; each line is like one of::

    {"prompt": "...", "output_len": 64}
    {"messages": [{"role": "user", "content": "..."}], "output_len": 64}
    {"prompt": "...", "images": ["cat.jpg", "/abs/dog.png"]}

``output_len`` is optional (it falls back to ``Workload.output_len``). ``images`` are paths
relative to the dataset's folder (or absolute); they go before the text of a ``prompt`` row, or
before the content of the first user message of a ``messages`` row. Every request is sent with
``ignore_eos``, for datasets too, so that each one generates a fixed number of tokens and trials
are compared on the same amount of work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from autotune.errors import UserError
from autotune.load.dataset import file_sha256, load_dataset, read_rows, to_int, to_pair
from autotune.load.request import Request

__all__ = ["Request", "Workload", "build_requests"]

_MIN_TOKEN_ID = 10  # skip the low ids, where special tokens (bos, eos, pad) usually live
_MAX_TOKEN_ID = 32000
_MAX_IMAGE_SIDE = 8192


@dataclass(frozen=True)
class Workload:
    """The traffic a study is tuned for."""

    input_len: int = 512
    """Prompt length in tokens (synthetic prompts; words of text for image requests)."""
    output_len: int = 128
    """Output tokens per request (fixed with ``ignore_eos``); the default for dataset rows."""
    num_prompts: int | None = None
    """Requests per benchmark; ``None`` lets the caller decide (enough to saturate the server)."""
    dataset: Path | None = None
    """A JSONL file of prompts or chat messages instead of synthetic prompts."""
    seed: int = 0
    """Seed of the synthetic prompts; the same seed gives the same requests in every trial."""
    images_per_request: tuple[int, int] | None = None
    """Synthetic images per request, ``(low, high)``: fixed if equal, else drawn per request."""
    image_size: tuple[int, int] = (512, 512)
    """Width and height of the synthetic images."""

    def signature(self) -> str:
        """A stable short id for study names and profile keys: ``in512-out128(-img2-512x512)``."""
        if self.dataset is not None:
            return f"ds-{file_sha256(self.dataset)[:8]}-out{self.output_len}"
        text = f"in{self.input_len}-out{self.output_len}"
        if self.images_per_request is None:
            return text
        low, high = self.images_per_request
        count = str(low) if low == high else f"{low}to{high}"
        width, height = self.image_size
        return f"{text}-img{count}-{width}x{height}"

    @property
    def max_images(self) -> int:
        """The most images one request can carry (the server's per-prompt image limit)."""
        if self.dataset is not None:
            from autotune.load.images import image_paths

            return max(len(image_paths(row, where)) for where, row in read_rows(self.dataset))
        return 0 if self.images_per_request is None else self.images_per_request[1]

    def to_dict(self) -> dict[str, object]:
        """Plain values for a YAML profile."""
        ipr = self.images_per_request
        return {
            "input_len": self.input_len,
            "output_len": self.output_len,
            "num_prompts": self.num_prompts,
            "dataset": None if self.dataset is None else str(self.dataset),
            "seed": self.seed,
            "images_per_request": None if ipr is None else list(ipr),
            "image_size": list(self.image_size),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Workload:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"workload: unknown key(s) {', '.join(unknown)}")
        default = cls()
        dataset = d.get("dataset")
        if dataset is not None and not isinstance(dataset, (str, Path)):
            raise UserError(f"workload: dataset must be a path, got {dataset!r}")
        num_prompts = d.get("num_prompts")
        ipr = d.get("images_per_request")
        return cls(
            input_len=to_int(d.get("input_len", default.input_len), "input_len"),
            output_len=to_int(d.get("output_len", default.output_len), "output_len"),
            num_prompts=None if num_prompts is None else to_int(num_prompts, "num_prompts"),
            dataset=None if dataset is None else Path(dataset),
            seed=to_int(d.get("seed", default.seed), "seed"),
            images_per_request=None if ipr is None else to_pair(ipr, "images_per_request"),
            image_size=to_pair(d.get("image_size", default.image_size), "image_size"),
        )

    def validate(self) -> None:
        """Raise :class:`UserError` with one clear line if the workload cannot be run."""
        self._check()
        if self.dataset is not None:
            load_dataset(self.dataset, default_output_len=self.output_len)

    def _check(self) -> None:
        """The checks that need no file."""
        if self.input_len < 1:
            raise UserError(f"workload: input_len must be at least 1, got {self.input_len}")
        if self.output_len < 1:
            raise UserError(f"workload: output_len must be at least 1, got {self.output_len}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise UserError(f"workload: num_prompts must be at least 1, got {self.num_prompts}")
        low, high = self.images_per_request or (0, 0)
        if not 0 <= low <= high:
            raise UserError(
                f"workload: images_per_request must be 0 <= low <= high, not {low}..{high}"
            )
        if self.images_per_request is not None and self.dataset is not None:
            raise UserError("workload: images_per_request is for synthetic prompts, not a dataset")
        width, height = self.image_size
        if not (1 <= width <= _MAX_IMAGE_SIDE and 1 <= height <= _MAX_IMAGE_SIDE):
            side = f"1..{_MAX_IMAGE_SIDE} pixels a side"
            raise UserError(f"workload: image_size must be {side}, got {width}x{height}")


def build_requests(
    workload: Workload, *, num_prompts: int, vocab_size: int | None
) -> list[Request]:
    """Build ``num_prompts`` requests, the same ones for the same workload and seed.

    Synthetic prompts differ from each other from the first token on, so prefix caching cannot
    make a configuration look faster than it is; synthetic images all differ too. Dataset rows
    are cycled in file order.
    """
    if num_prompts < 1:
        raise UserError(f"workload: num_prompts must be at least 1, got {num_prompts}")
    workload._check()
    if workload.dataset is not None:
        rows = load_dataset(workload.dataset, default_output_len=workload.output_len)
        return [rows[i % len(rows)] for i in range(num_prompts)]
    if workload.images_per_request is not None:
        from autotune.load.images import WORDS, synthetic_chats

        rng = random.Random(workload.seed)
        prefix_len = _prefix_len(len(WORDS), num_prompts)
        chats = synthetic_chats(
            rng,
            _distinct_prefixes(rng, len(WORDS), prefix_len, num_prompts),
            n_words=max(workload.input_len, prefix_len),
            images_per_request=workload.images_per_request,
            image_size=workload.image_size,
            seed=workload.seed,
        )
        return [
            Request(None, chat, max_tokens=workload.output_len, ignore_eos=True) for chat in chats
        ]
    hi = min(vocab_size or _MAX_TOKEN_ID, _MAX_TOKEN_ID)
    size = hi - _MIN_TOKEN_ID
    if size < 2:
        raise UserError(f"workload: vocab_size {vocab_size} is too small for synthetic prompts")
    prefix_len = _prefix_len(size, num_prompts)
    if prefix_len > workload.input_len:
        raise UserError(f"workload: {num_prompts} distinct prompts need input_len >= {prefix_len}")
    rng = random.Random(workload.seed)
    requests = []
    for ids in _distinct_prefixes(rng, size, prefix_len, num_prompts):
        ids = [_MIN_TOKEN_ID + i for i in ids]
        ids += [rng.randrange(_MIN_TOKEN_ID, hi) for _ in range(workload.input_len - prefix_len)]
        requests.append(
            Request(prompt=ids, messages=None, max_tokens=workload.output_len, ignore_eos=True)
        )
    return requests


def _prefix_len(size: int, count: int) -> int:
    """The shortest prefix that can tell ``count`` prompts apart; 1 unless there are very many."""
    prefix_len = 1
    while size**prefix_len < count:
        prefix_len += 1
    return prefix_len


def _distinct_prefixes(rng: random.Random, size: int, length: int, count: int) -> list[list[int]]:
    """``count`` distinct sequences of ``length`` numbers in ``range(size)``, in random order."""
    prefixes = []
    for code in rng.sample(range(size**length), count):
        digits = []
        for _ in range(length):
            code, digit = divmod(code, size)
            digits.append(digit)
        prefixes.append(digits)
    return prefixes
