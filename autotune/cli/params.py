"""Click parameter types and callbacks that refuse hostile input while parsing: numbers that are
not finite or outside their documented range, model ids that are no name, text holding NaN or
infinity, and arguments after ``--`` that must not reach vLLM. Every refusal is one line."""

from __future__ import annotations

import math
import re
from typing import Any

import click

from autotune.app.options import LIMITS, check_model_id
from autotune.engine.safety import check_user_args


class Finite(click.FloatRange):
    """A float in a range that is also finite (click's FloatRange lets NaN and infinity by)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def ints(name: str) -> click.IntRange:
    """The documented range of an integer option (``autotune.app.options.LIMITS``)."""
    low, high = LIMITS[name]
    return click.IntRange(int(low), int(high))


def floats(name: str, *, min_open: bool = False) -> Finite:
    """The documented range of a float option, finite."""
    low, high = LIMITS[name]
    return Finite(float(low), float(high), min_open=min_open)


def model_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """MODEL: a local directory or a Hugging Face id, never control characters or a name no
    file system or hub holds."""
    return None if value is None else check_model_id(value)


_UNIT = re.compile(r"(?:[kmgt]?i?b|[kmgt]|ms)$", re.IGNORECASE)


def finite_text(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Option text holding numbers (``V|LOW:HIGH``, ``NAME=MS``, ``18GiB``, ``a=1,b=2``): none
    of them NaN or infinite (``1e400`` is infinite), the text printable and short."""
    for text in value if isinstance(value, tuple) else (value,):
        if text is None:
            continue
        if len(text) > 1000 or not text.isprintable():
            raise click.BadParameter(f"{text[:40]!r}: expected printable text, at most 1000 chars")
        for token in re.split(r"[\s,:=]+", text):
            try:
                number = float(_UNIT.sub("", token))
            except ValueError:
                continue
            if not math.isfinite(number):
                raise click.BadParameter(f"{text!r}: {token} is not a finite number")
    return value


def user_args(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Arguments after ``--``: checked (``engine.safety.check_user_args``), flags spelt out."""
    return tuple(check_user_args(value))


_DIGITS = re.compile(r"[0-9]{1,6}")


def image_size(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--image-size WIDTHxHEIGHT``."""
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not sep or not _DIGITS.fullmatch(w) or not _DIGITS.fullmatch(h):
        raise click.BadParameter(f"{value[:40]!r}: expected WIDTHxHEIGHT, e.g. 512x512")
    if not 0 < int(w) <= 8192 >= int(h) > 0:
        raise click.BadParameter(f"{value!r}: width and height must be 1..8192")
    return (int(w), int(h))


def k_range(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--images-per-request K`` or ``LOW:HIGH``."""
    if value is None:
        return None
    lo, _, hi = value.partition(":")
    if not _DIGITS.fullmatch(lo) or not _DIGITS.fullmatch(hi or lo) or int(lo) > int(hi or lo):
        raise click.BadParameter(f"{value[:40]!r}: expected K or LOW:HIGH, e.g. 2 or 1:4")
    if int(hi or lo) > 999:
        raise click.BadParameter(f"{value!r}: at most 999 images per request (vLLM's limit)")
    return (int(lo), int(hi or lo))
