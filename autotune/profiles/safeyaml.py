"""Reading a profile file that may come from someone else: regular files only (never a FIFO or a
device, which would hang or never end), at most ``MAX_BYTES``, parsed by a YAML loader that
refuses anchors and aliases (no alias bombs), tags other than plain JSON-like data, and nesting
deeper than ``MAX_DEPTH``. Every failure is a ``ProfileError`` naming the file, on one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import Node

from autotune.errors import ProfileError

MAX_BYTES = 1 << 20  # a real profile is a few KiB; a Pareto front, a few tens
MAX_DEPTH = 32  # a profile nests about five levels
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("null", "bool", "int", "float", "str", "seq", "map", "timestamp")
)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors, aliases, merge keys or tags beyond JSON's data (a
    timestamp stays the text it was written as), and with a bounded depth."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            problem = "anchors and aliases are not allowed"
            raise ConstructorError(None, None, problem, event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH}", event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag not in _PLAIN_TAGS:
            raise ConstructorError(None, None, f"tag {node.tag!a} is not allowed", node.start_mark)
        return super().construct_object(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if any(key.tag == "tag:yaml.org,2002:merge" for key, _ in node.value):
            raise ConstructorError(None, None, "merge keys (<<) are not allowed", node.start_mark)
        super().flatten_mapping(node)

    def construct_yaml_timestamp(self, node: Node) -> Any:
        return self.construct_scalar(node)  # type: ignore[arg-type]


StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictLoader.construct_yaml_timestamp)


def read_regular(path: Path) -> str:
    """The text of ``path`` when it is a regular file (a symlink to one is fine) of at most
    ``MAX_BYTES`` bytes of UTF-8; opened without blocking so a FIFO swapped in never hangs."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise ProfileError(f"{path}: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ProfileError(f"{path}: not a regular file")
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_BYTES:
        raise ProfileError(f"{path}: larger than {MAX_BYTES // 1024} KiB, not a profile")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not UTF-8 text") from None


def parse(text: str, *, source: str) -> Any:
    """The data of one YAML document, loaded with ``StrictLoader``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
            reason = exc.problem
        raise ProfileError(f"{source}: not valid YAML ({_one_line(reason)})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise ProfileError(f"{source}: not valid YAML ({type(exc).__name__})") from None


def _one_line(text: str) -> str:
    """``text`` fit for a one-line message: printable ASCII, at most 120 characters."""
    shown = "".join(c if " " <= c <= "~" else "?" for c in text)
    return shown[:120]
