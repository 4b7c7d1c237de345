"""The values a profile may hold: JSON-like data (text keys; text, numbers, booleans, null,
lists), no control or line-separator characters in any text, sane lengths, and key fields that
are short non-empty text. Checked on load, on build, on save and before export, so nothing a
shared file carries can break a line of a generated file, a log line or a terminal."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from autotune.errors import ProfileError

MAX_TEXT = 1 << 16  # any text value (a path, a warning); the file is at most 1 MiB
MAX_KEY = 128  # a mapping key
MAX_NAME = 256  # model.name, hardware.key, workload.signature, objective, vllm_version
MAX_ITEMS = 10_000  # entries in one list or mapping
MAX_INT = 1 << 63
MAX_DEPTH = 32
# Cc: control (NUL, newline, ESC, NEL), Cf: format (bidi overrides, zero width), Cs: lone
# surrogates, Co/Cn: private use and unassigned, Zl/Zp: the line and paragraph separators YAML
# and some terminals break lines on.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
KEY_FIELDS = (("model", "name"), ("hardware", "key"), ("workload", "signature"))


def show(value: object) -> str:
    """A value fit for a one-line message: escaped ASCII, at most 60 characters."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bad_char(text: str) -> str | None:
    """The first character of ``text`` no profile text may hold, if any."""
    for char in text:
        if not (" " <= char <= "~") and unicodedata.category(char) in _BAD_CATEGORIES:
            return char
    return None


def check_text(text: str, *, where: str, source: str, limit: int = MAX_TEXT) -> None:
    """``text`` at ``where`` (e.g. ``workload.signature``): printable, at most ``limit`` long."""
    where = printable(where)
    if len(text) > limit:
        raise ProfileError(f"{source}: {where} is longer than {limit} characters")
    char = bad_char(text)
    if char is not None:
        raise ProfileError(f"{source}: {where} holds the control character {char!a}")


def printable(text: str) -> str:
    """``text`` with every character a terminal would not print escaped (``\\x1f``)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def check_tree(data: object, *, source: str) -> None:
    """Every value under ``data``: only JSON-like types, text keys, printable bounded text,
    integers within 64 bits, at most ``MAX_DEPTH`` levels."""
    _check(data, where="", source=source, depth=0)


def _check(value: object, *, where: str, source: str, depth: int) -> None:
    here = where or "the profile"
    if depth > MAX_DEPTH:
        raise ProfileError(f"{source}: {here} is nested deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        check_text(value, where=here, source=source)
    elif isinstance(value, int):
        if not -MAX_INT <= value < MAX_INT:
            raise ProfileError(f"{source}: {here} is an integer outside 64 bits")
    elif isinstance(value, float):
        return
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise ProfileError(f"{source}: {here} has more than {MAX_ITEMS} entries")
        for i, item in enumerate(value):
            _check(item, where=f"{where}[{i}]", source=source, depth=depth + 1)
    elif isinstance(value, Mapping):
        if len(value) > MAX_ITEMS:
            raise ProfileError(f"{source}: {here} has more than {MAX_ITEMS} entries")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ProfileError(f"{source}: {here} has a key that is not text ({show(key)})")
            check_text(key, where=f"a key of {here}", source=source, limit=MAX_KEY)
            name = f"{where}.{key}" if where else key
            _check(item, where=name, source=source, depth=depth + 1)
    else:
        raise ProfileError(f"{source}: {here} is a {type(value).__name__}, not plain data")


def check_key_fields(data: Mapping[str, Any], *, source: str) -> None:
    """The fields a profile is keyed and filed by: short, non-empty text (``vllm_version``
    may be null)."""
    named = [(f"{key}.{sub}", data[key].get(sub)) for key, sub in KEY_FIELDS]
    named.append(("objective", data["objective"]))
    if data["vllm_version"] is not None:
        named.append(("vllm_version", data["vllm_version"]))
    for where, value in named:
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"{source}: {where} must be non-empty text")
        check_text(value, where=where, source=source, limit=MAX_NAME)
    count = data["hardware"].get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise ProfileError(f"{source}: hardware.count must be an integer >= 1")
    created = data["provenance"].get("created")
    if created is not None and not isinstance(created, str):
        raise ProfileError(f"{source}: provenance.created must be text")
