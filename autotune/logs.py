"""The one logging handler of the command line (and of the worker processes it starts): every
``autotune.*`` logger's records as ``autotune: …`` lines on stderr (stdout carries only a
command's data: ``--dry-run``, ``--json``). A library caller configures logging its own way
(``logging.getLogger("autotune")``); nothing is printed until someone configures it. Secrets
are masked in every line (``autotune.masking``)."""

from __future__ import annotations

import logging
import sys

from autotune.masking import mask


class _Formatter(logging.Formatter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = mask(record.getMessage())
        if record.levelno >= logging.WARNING and not text.startswith("warning:"):
            text = f"warning: {text}"
        return f"{self.prefix}: {text}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests capture it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: it flushes the previous one, perhaps closed
        super().emit(record)


def configure(*, level: int = logging.INFO, prefix: str = "autotune") -> None:
    """Send autotune's log records to stderr as ``PREFIX: message`` (once per process)."""
    logger = logging.getLogger("autotune")
    logger.setLevel(level)
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(_Formatter(prefix))


def configured() -> bool:
    """Has ``configure`` run in this process (so that workers it starts configure too)?"""
    return any(isinstance(h, _StderrHandler) for h in logging.getLogger("autotune").handlers)
