"""What the benchmark sends: a workload description and the requests built from it.

Synthetic prompts are lists of token ids, so no tokenizer is needed and every prompt has exactly
``input_len`` tokens. A JSONL dataset can be used instead; each line is one of::

    {"prompt": "...", "output_len": 64}
    {"messages": [{"role": "user", "content": "..."}], "output_len": 64}

``output_len`` is optional (it falls back to ``Workload.output_len``). Every request is sent with
``ignore_eos``, for datasets too, so that each one generates a fixed number of tokens and trials
are compared on the same amount of work.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autotune.errors import UserError

__all__ = ["Request", "Workload", "build_requests"]

_MIN_TOKEN_ID = 10  # skip the low ids, where special tokens (bos, eos, pad) usually live
_MAX_TOKEN_ID = 32000


@dataclass(frozen=True)
class Workload:
    """The traffic a study is tuned for."""

    input_len: int = 512
    """Prompt length in tokens (synthetic prompts only)."""
    output_len: int = 128
    """Output tokens per request (fixed with ``ignore_eos``); the default for dataset rows."""
    num_prompts: int | None = None
    """Requests per benchmark; ``None`` lets the caller decide (enough to saturate the server)."""
    dataset: Path | None = None
    """A JSONL file of prompts or chat messages instead of synthetic prompts."""
    seed: int = 0
    """Seed of the synthetic prompts; the same seed gives the same requests in every trial."""

    def signature(self) -> str:
        """A stable short id for study names and profile keys, e.g. ``in512-out128``."""
        if self.dataset is None:
            return f"in{self.input_len}-out{self.output_len}"
        return f"ds-{_file_sha256(self.dataset)[:8]}-out{self.output_len}"

    def to_dict(self) -> dict[str, object]:
        """Plain values for a YAML profile."""
        return {
            "input_len": self.input_len,
            "output_len": self.output_len,
            "num_prompts": self.num_prompts,
            "dataset": None if self.dataset is None else str(self.dataset),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Workload:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        unknown = sorted(set(d) - {"input_len", "output_len", "num_prompts", "dataset", "seed"})
        if unknown:
            raise UserError(f"workload: unknown key(s) {', '.join(unknown)}")
        default = cls()
        dataset = d.get("dataset")
        if dataset is not None and not isinstance(dataset, (str, Path)):
            raise UserError(f"workload: dataset must be a path, got {dataset!r}")
        num_prompts = d.get("num_prompts")
        return cls(
            input_len=_int(d.get("input_len", default.input_len), "input_len"),
            output_len=_int(d.get("output_len", default.output_len), "output_len"),
            num_prompts=None if num_prompts is None else _int(num_prompts, "num_prompts"),
            dataset=None if dataset is None else Path(dataset),
            seed=_int(d.get("seed", default.seed), "seed"),
        )

    def validate(self) -> None:
        """Raise :class:`UserError` with one clear line if the workload cannot be run."""
        if self.input_len < 1:
            raise UserError(f"workload: input_len must be at least 1, got {self.input_len}")
        if self.output_len < 1:
            raise UserError(f"workload: output_len must be at least 1, got {self.output_len}")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise UserError(f"workload: num_prompts must be at least 1, got {self.num_prompts}")
        if self.dataset is not None:
            _load_dataset(self.dataset, default_output_len=self.output_len)


@dataclass(frozen=True)
class Request:
    """One request: a completion prompt or a chat conversation."""

    prompt: list[int] | str | None
    """Token ids or text for ``/v1/completions``."""
    messages: list[dict[str, object]] | None
    """Chat messages for ``/v1/chat/completions``."""
    max_tokens: int
    ignore_eos: bool

    @property
    def is_chat(self) -> bool:
        """Whether the request goes to ``/v1/chat/completions``."""
        return self.messages is not None


def build_requests(
    workload: Workload, *, num_prompts: int, vocab_size: int | None
) -> list[Request]:
    """Build ``num_prompts`` requests, the same ones for the same workload and seed.

    Synthetic prompts differ from each other from the first token on, so prefix caching cannot
    make a configuration look faster than it is. Dataset rows are cycled in file order.
    """
    if num_prompts < 1:
        raise UserError(f"workload: num_prompts must be at least 1, got {num_prompts}")
    if workload.dataset is not None:
        rows = _load_dataset(workload.dataset, default_output_len=workload.output_len)
        return [rows[i % len(rows)] for i in range(num_prompts)]
    workload.validate()
    hi = min(vocab_size or _MAX_TOKEN_ID, _MAX_TOKEN_ID)
    size = hi - _MIN_TOKEN_ID
    if size < 2:
        raise UserError(f"workload: vocab_size {vocab_size} is too small for synthetic prompts")
    # The shortest prefix that can tell all prompts apart; one token unless there are very many.
    prefix_len = 1
    while size**prefix_len < num_prompts:
        prefix_len += 1
    if prefix_len > workload.input_len:
        raise UserError(f"workload: {num_prompts} distinct prompts need input_len >= {prefix_len}")
    rng = random.Random(workload.seed)
    prefixes = rng.sample(range(size**prefix_len), num_prompts)
    requests = []
    for code in prefixes:
        ids = []
        for _ in range(prefix_len):
            code, digit = divmod(code, size)
            ids.append(_MIN_TOKEN_ID + digit)
        ids += [rng.randrange(_MIN_TOKEN_ID, hi) for _ in range(workload.input_len - prefix_len)]
        requests.append(
            Request(prompt=ids, messages=None, max_tokens=workload.output_len, ignore_eos=True)
        )
    return requests


def _load_dataset(path: Path, *, default_output_len: int) -> list[Request]:
    """Parse a JSONL dataset into one request per row."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"dataset {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset {path}: cannot read it ({exc})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            rows.append(
                _parse_row(
                    line,
                    where=f"dataset {path}, line {lineno}",
                    default_output_len=default_output_len,
                )
            )
    if not rows:
        raise UserError(f"dataset {path} has no rows")
    return rows


def _parse_row(line: str, *, where: str, default_output_len: int) -> Request:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object")
    output_len = row.get("output_len", default_output_len)
    if isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1:
        raise UserError(f"{where}: output_len must be a positive integer")
    prompt, messages = row.get("prompt"), row.get("messages")
    if (prompt is None) == (messages is None):
        raise UserError(f"{where}: expected exactly one of 'prompt' or 'messages'")
    if prompt is not None and not (
        (isinstance(prompt, str) and prompt)
        or (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        )
    ):
        raise UserError(f"{where}: 'prompt' must be a non-empty string or list of token ids")
    if messages is not None and not (
        isinstance(messages, list)
        and messages
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        raise UserError(f"{where}: 'messages' must be a non-empty list of objects with a 'role'")
    return Request(prompt=prompt, messages=messages, max_tokens=output_len, ignore_eos=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UserError(f"dataset {path}: cannot read it ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"workload: {name} must be an integer, got {value!r}")
    return value
