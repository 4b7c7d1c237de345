"""Reading what an OpenAI-compatible server answers: content in stream events, error messages in
events and bodies, and failed requests as records."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence

from autotune.load.metrics import RequestRecord

_MAX_DISTINCT_ERRORS = 10
_MAX_MESSAGE_CHARS = 200
_CONTENT_KEYS = ("content", "reasoning_content", "reasoning")


def has_content(event: dict[str, object]) -> bool:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    if isinstance(choice.get("text"), str) and choice["text"]:
        return True
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(
        isinstance(delta.get(key), str) and delta[key] for key in _CONTENT_KEYS
    )


def event_error(event: dict[str, object]) -> str | None:
    """The message of an error sent inside the stream, if any."""
    error = event.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return _short(error["message"])
    if isinstance(error, str):
        return _short(error)
    if event.get("object") == "error":
        return _short(str(event.get("message", "error")))
    return None


def error_message(body: bytes) -> str:
    """The server's message from an error body: OpenAI-style JSON or plain text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return _short(text) or "(empty body)"
    if isinstance(obj, dict):
        message = event_error(obj)
        if message is not None:
            return message
        for key in ("message", "detail"):
            if isinstance(obj.get(key), str):
                return _short(obj[key])
    return _short(text)


def describe(exc: Exception) -> str:
    message = _short(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _short(text: str) -> str:
    line = " ".join(text.split())
    if len(line) > _MAX_MESSAGE_CHARS:
        return line[: _MAX_MESSAGE_CHARS - 1] + "…"
    return line


def failed(start: float, error: str, *, status: int | None = None) -> RequestRecord:
    return RequestRecord(
        ok=False,
        prompt_tokens=0,
        output_tokens=0,
        start=start,
        ttft_s=None,
        itls_s=(),
        e2e_s=max(0.0, time.perf_counter() - start),
        error=error,
        status=status,
    )


def summarise_errors(records: Sequence[RequestRecord]) -> tuple[str, ...]:
    counts = Counter(r.error for r in records if not r.ok and r.error)
    return tuple(f"{message} (x{n})" for message, n in counts.most_common(_MAX_DISTINCT_ERRORS))
