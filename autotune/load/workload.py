"""What the benchmark sends: a workload description and the requests built from it.

Synthetic prompts are lists of token ids, so no tokenizer is needed and every prompt has exactly
``input_len`` tokens. With ``images_per_request`` every request is instead a chat request with
synthetic images (see :mod:`autotune.load.images`) followed by about ``input_len`` words of text.
``lengths_from`` draws each request's (input, output) tokens from a dataset file instead of fixed
lengths (seeded, with replacement). A dataset can be used instead of synthetic prompts: a
ShareGPT JSON list (:mod:`autotune.load.sharegpt`) or JSON lines, each like one of::

    {"prompt": "...", "output_len": 64}
    {"messages": [{"role": "user", "content": "..."}], "output_len": 64}
    {"prompt": "...", "images": ["cat.jpg", "/abs/dog.png"], "timestamp": 1.25}

``output_len`` is optional (it falls back to ``Workload.output_len``). ``images`` are paths
relative to the dataset's folder (or absolute); they go before the text of a ``prompt`` row, or
before the content of the first user message of a ``messages`` row. ``timestamp`` (seconds) is
when a trace sent the row. Every request is sent with ``ignore_eos``, for datasets too, so that
each one generates a fixed number of tokens and trials are compared on the same amount of work.

``shared_prefix_len`` N with ``prefix_groups`` K starts every request with one of K shared
prefixes (:mod:`autotune.load.prefix`): the first N of a synthetic prompt's ``input_len`` tokens,
a system message of N words for synthetic chats, or an N-word system prompt put before each
dataset row (so a dataset's prompts grow by about N tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from autotune.errors import UserError
from autotune.load.dataset import file_sha256, to_int, to_pair
from autotune.load.request import Request
from autotune.load.sources import (
    draw_sizes,
    load_requests,
    max_dataset_images,
    token_sizes,
)
from autotune.load.tokens import TokenCounter

__all__ = ["Request", "Workload", "build_requests"]

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
    """A ShareGPT JSON or JSONL file of prompts or chat messages instead of synthetic prompts."""
    seed: int = 0
    """Seed of the synthetic prompts; the same seed gives the same requests in every trial."""
    images_per_request: tuple[int, int] | None = None
    """Synthetic images per request, ``(low, high)``: fixed if equal, else drawn per request."""
    image_size: tuple[int, int] = (512, 512)
    """Width and height of the synthetic images."""
    lengths_from: Path | None = None
    """A ShareGPT JSON or JSONL file whose (input, output) token counts synthetic requests take."""
    shared_prefix_len: int = 0
    """Tokens (words for chats and datasets) of the prefix requests share; 0: none."""
    prefix_groups: int = 1
    """Distinct shared prefixes; request ``i`` takes prefix ``i % prefix_groups``."""
    tokenizer: Path | None = None
    """The model's ``tokenizer.json``, to count dataset tokens; None: estimated (4 chars each)."""

    def signature(self) -> str:
        """A stable short id for study names and profile keys: ``in512-out128(-img2-512x512)``,
        ``ds-<sha8>-out128`` or ``len-<sha8>``, then ``-px<N>x<K>`` with a shared prefix."""
        if self.dataset is not None:
            text = f"ds-{file_sha256(self.dataset)[:8]}-out{self.output_len}"
        elif self.lengths_from is not None:
            text = f"len-{file_sha256(self.lengths_from, what='lengths file')[:8]}"
        else:
            text = f"in{self.input_len}-out{self.output_len}"
        if self.images_per_request is not None:
            low, high = self.images_per_request
            count = str(low) if low == high else f"{low}to{high}"
            width, height = self.image_size
            text += f"-img{count}-{width}x{height}"
        if self.shared_prefix_len:
            text += f"-px{self.shared_prefix_len}x{self.prefix_groups}"
        return text

    @property
    def counter(self) -> TokenCounter:
        """What counts the tokens of dataset text for this workload."""
        return TokenCounter(self.tokenizer)

    @property
    def max_images(self) -> int:
        """The most images one request can carry (the server's per-prompt image limit)."""
        if self.dataset is not None:
            return max_dataset_images(self.dataset)
        return 0 if self.images_per_request is None else self.images_per_request[1]

    @property
    def max_request_tokens(self) -> int:
        """The longest request, input plus output tokens (text of datasets counted by
        :attr:`counter`; images not counted)."""
        return max(i + o for i, o in self._sizes())

    @property
    def mean_request_tokens(self) -> int:
        """A typical request: the mean of input plus output tokens, rounded up."""
        sizes = self._sizes()
        return math.ceil(sum(i + o for i, o in sizes) / len(sizes))

    def _sizes(self) -> tuple[tuple[int, int], ...]:
        """The (input, output) tokens a request can have."""
        shared = self.shared_prefix_len
        if self.dataset is not None:
            found = token_sizes(
                self.dataset, default_output_len=self.output_len, counter=self.counter
            )
            return tuple((i + shared, o) for i, o in found)
        if self.lengths_from is not None:
            found = token_sizes(
                self.lengths_from, default_output_len=self.output_len, counter=self.counter
            )
            return tuple((max(i, shared + 1), o) for i, o in found)
        return ((self.input_len, self.output_len),)

    def to_dict(self) -> dict[str, object]:
        """Plain values for a YAML profile."""
        ipr = self.images_per_request
        return {
            "input_len": self.input_len,
            "output_len": self.output_len,
            "num_prompts": self.num_prompts,
            "dataset": _text(self.dataset),
            "seed": self.seed,
            "images_per_request": None if ipr is None else list(ipr),
            "image_size": list(self.image_size),
            "lengths_from": _text(self.lengths_from),
            "shared_prefix_len": self.shared_prefix_len,
            "prefix_groups": self.prefix_groups,
        }  # never the tokenizer: a path on this machine, found again from the model

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Workload:
        """The inverse of :meth:`to_dict`; missing keys (older profiles) take their defaults."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"workload: unknown key(s) {', '.join(unknown)}")
        default = cls()
        num_prompts = d.get("num_prompts")
        ipr = d.get("images_per_request")
        return cls(
            input_len=to_int(d.get("input_len", default.input_len), "input_len"),
            output_len=to_int(d.get("output_len", default.output_len), "output_len"),
            num_prompts=None if num_prompts is None else to_int(num_prompts, "num_prompts"),
            dataset=_path(d, "dataset"),
            seed=to_int(d.get("seed", default.seed), "seed"),
            images_per_request=None if ipr is None else to_pair(ipr, "images_per_request"),
            image_size=to_pair(d.get("image_size", default.image_size), "image_size"),
            lengths_from=_path(d, "lengths_from"),
            shared_prefix_len=to_int(d.get("shared_prefix_len", 0), "shared_prefix_len"),
            prefix_groups=to_int(d.get("prefix_groups", 1), "prefix_groups"),
            tokenizer=_path(d, "tokenizer"),
        )

    def validate(self) -> None:
        """Raise :class:`UserError` with one clear line if the workload cannot be run."""
        self._check()
        if self.dataset is not None:
            load_requests(self.dataset, default_output_len=self.output_len, counter=self.counter)
        if self.lengths_from is not None:
            self._sizes()

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
        if self.lengths_from is not None and self.dataset is not None:
            raise UserError("workload: lengths_from is for synthetic prompts, not with a dataset")
        self._check_prefix()

    def _check_prefix(self) -> None:
        shared = self.shared_prefix_len
        if shared < 0:
            raise UserError(f"workload: shared_prefix_len must be at least 0, got {shared}")
        if self.prefix_groups < 1:
            raise UserError(f"workload: prefix_groups must be at least 1, got {self.prefix_groups}")
        if self.prefix_groups > 1 and not shared:
            raise UserError("workload: prefix_groups needs a shared_prefix_len above 0")
        fixed = self.dataset is None and self.lengths_from is None
        if fixed and shared >= self.input_len:
            raise UserError(
                f"workload: shared_prefix_len must be below input_len ({self.input_len}), "
                f"got {shared}"
            )


def build_requests(
    workload: Workload, *, num_prompts: int, vocab_size: int | None
) -> list[Request]:
    """Build ``num_prompts`` requests, the same ones for the same workload and seed.

    Synthetic prompts differ from each other from the first token after the shared prefix on,
    so prefix caching cannot make a configuration look faster than it is; synthetic images all
    differ too. Dataset rows are cycled in file order.
    """
    if num_prompts < 1:
        raise UserError(f"workload: num_prompts must be at least 1, got {num_prompts}")
    wl = workload
    wl._check()
    shared, groups = wl.shared_prefix_len, wl.prefix_groups
    if wl.dataset is not None:
        rows = load_requests(wl.dataset, default_output_len=wl.output_len, counter=wl.counter)
        requests = [rows[i % len(rows)] for i in range(num_prompts)]
        return _prefixed(requests, wl, vocab_size) if shared else requests
    if wl.lengths_from is not None:
        sizes = draw_sizes(
            token_sizes(wl.lengths_from, default_output_len=wl.output_len, counter=wl.counter),
            count=num_prompts,
            seed=wl.seed,
            min_input=shared + 1,
        )
    else:
        sizes = [(wl.input_len, wl.output_len)] * num_prompts
    if wl.images_per_request is not None:
        from autotune.load.synthetic import image_requests

        return image_requests(
            sizes,
            seed=wl.seed,
            images_per_request=wl.images_per_request,
            image_size=wl.image_size,
            shared_prefix_len=shared,
            prefix_groups=groups,
        )
    from autotune.load.synthetic import token_requests

    return token_requests(
        sizes, seed=wl.seed, vocab_size=vocab_size, shared_prefix_len=shared, prefix_groups=groups
    )


def _prefixed(requests: list[Request], wl: Workload, vocab_size: int | None) -> list[Request]:
    """Dataset requests with the group's shared system prompt (token ids for token-id rows)."""
    from autotune.load.prefix import group_of, token_groups, with_prefix, word_groups
    from autotune.load.synthetic import MAX_TOKEN_ID, MIN_TOKEN_ID

    length, groups = wl.shared_prefix_len, wl.prefix_groups
    texts = word_groups(length=length, groups=groups, seed=wl.seed)
    ids: list[list[int]] = [[] for _ in texts]
    if any(isinstance(r.prompt, list) for r in requests):
        high = min(vocab_size or MAX_TOKEN_ID, MAX_TOKEN_ID)
        ids = token_groups(low=MIN_TOKEN_ID, high=high, length=length, groups=groups, seed=wl.seed)
    prefixed = []
    for i, request in enumerate(requests):
        g = group_of(i, groups)
        prefixed.append(with_prefix(request, text=texts[g], ids=ids[g]))
    return prefixed


def _path(d: Mapping[str, object], key: str) -> Path | None:
    value = d.get(key)
    if value is not None and not isinstance(value, (str, Path)):
        raise UserError(f"workload: {key} must be a path, got {value!r}")
    return None if value is None else Path(value)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
