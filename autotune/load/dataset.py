"""A JSONL dataset of prompts (``--dataset``, ``--trace``): reading its rows into requests, with
their images and send times (``timestamp``: seconds, a number >= 0), and the small value checks
the workload record shares."""

from __future__ import annotations

import hashlib
import json
import math
import stat
from pathlib import Path

from autotune.errors import UserError
from autotune.load.request import Request

MAX_DATASET_BYTES = 1 << 30  # a JSONL dataset: 1 GiB at most
MAX_LINE_BYTES = 16 << 20  # one row: 16 MiB at most


def regular_file(path: Path, *, what: str, max_bytes: int) -> int:
    """The size of ``path``, a regular file of at most ``max_bytes``; else one clear line (a
    device such as /dev/zero, a FIFO or a directory would never end or cannot be read)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path}: cannot read it ({error_reason(exc)})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {path}: cannot read it (not a regular file)")
    if info.st_size > max_bytes:
        raise UserError(f"{what} {path} is larger than {max_bytes >> 20} MiB")
    return info.st_size


def error_reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__


def _lines(path: Path) -> list[str]:
    """The lines of a JSONL file, each at most ``MAX_LINE_BYTES``, the file at most
    ``MAX_DATASET_BYTES`` (checked while reading too: a file may grow)."""
    regular_file(path, what="dataset", max_bytes=MAX_DATASET_BYTES)
    lines: list[str] = []
    total = 0
    try:
        with path.open("rb") as f:
            while line := f.readline(MAX_LINE_BYTES + 1):
                total += len(line)
                if len(line) > MAX_LINE_BYTES:
                    raise UserError(
                        f"dataset {path}, line {len(lines) + 1}: longer than "
                        f"{MAX_LINE_BYTES >> 20} MiB"
                    )
                if total > MAX_DATASET_BYTES:
                    raise UserError(f"dataset {path} is larger than {MAX_DATASET_BYTES >> 20} MiB")
                lines.append(line.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"dataset {path}: cannot read it ({error_reason(exc)})") from None
    return lines


def read_rows(path: Path) -> list[tuple[str, dict[str, object]]]:
    """The JSON objects of a JSONL file, each with where it is (file and line) for messages."""
    rows = []
    for lineno, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"dataset {path}, line {lineno}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise UserError(f"{where}: not valid JSON ({msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object")
        rows.append((where, row))
    if not rows:
        raise UserError(f"dataset {path} has no rows")
    return rows


def load_dataset(path: Path, *, default_output_len: int) -> list[Request]:
    """Parse a JSONL dataset into one request per row, with its images read."""
    return [
        _parse_row(row, where=where, default_output_len=default_output_len, folder=path.parent)
        for where, row in read_rows(path)
    ]


def _parse_row(
    row: dict[str, object], *, where: str, default_output_len: int, folder: Path
) -> Request:
    output_len = row.get("output_len", default_output_len)
    if isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1:
        raise UserError(f"{where}: output_len must be a positive integer")
    timestamp = row.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, (int, float))
        or not (math.isfinite(timestamp) and timestamp >= 0)
    ):
        shown = repr(timestamp)[:40]
        raise UserError(f"{where}: timestamp must be a number of seconds >= 0, got {shown}")
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
    if "images" in row:
        from autotune.load.images import chat_with_images, image_paths

        if paths := image_paths(row, where):
            messages = chat_with_images(prompt, messages, paths, folder=folder, where=where)
            prompt = None
    return Request(
        prompt=prompt,
        messages=messages,
        max_tokens=output_len,
        ignore_eos=True,
        timestamp=None if timestamp is None else float(timestamp),
    )


def file_sha256(path: Path, *, what: str = "dataset") -> str:
    regular_file(path, what=what, max_bytes=MAX_DATASET_BYTES)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    return digest.hexdigest()


def to_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"workload: {name} must be an integer, got {value!r}")
    return value


def to_pair(value: object, name: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"workload: {name} must be a list of two integers, got {value!r}")
    return to_int(value[0], name), to_int(value[1], name)
