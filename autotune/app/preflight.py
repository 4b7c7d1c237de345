"""Checks before the first launch (the profiles and state directories are writable), and one
line instead of a traceback when a write fails later: the study stays resumable."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autotune.engine.safety import redact_url
from autotune.errors import StorageError, UserError

RESUME = "the study is kept: fix it and run the same command again to resume"


def writable(directory: Path, *, what: str, flag: str) -> None:
    """Create ``directory`` and a file in it, or one line naming the directory and the flag."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".autotune-write-check-"):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise UserError(
            f"{what} {directory} is not writable ({why}); nothing was launched: fix it or pass "
            f"{flag}"
        ) from None


def check_dirs(*, profiles: Path, state: Path) -> None:
    """Before the first launch: a profile can be saved and trial logs and leases written."""
    writable(profiles, what="profiles directory", flag="--profiles-dir")
    writable(state, what="state directory", flag="--state-dir")


@contextmanager
def storage_errors(storage: str) -> Iterator[None]:
    """A study storage that fails mid-run (read-only, full, gone): one line, resumable."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (optuna.exceptions.StorageInternalError, SQLAlchemyError) as exc:
        cause = exc.__cause__ or exc
        text = str(getattr(cause, "orig", None) or cause).splitlines()[0]
        raise StorageError(
            f"study storage {redact_url(storage)} failed: {redact_url(text)}; {RESUME}"
        ) from None


@contextmanager
def profile_errors(directory: Path) -> Iterator[None]:
    """The profile cannot be written after the study: one line, the study kept."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise UserError(
            f"cannot write the profile to {directory} ({why}); {RESUME}, or save it later with "
            "autotune profiles save MODEL --from-study"
        ) from None
