"""Errors that reach the user as one clear line and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unusable environment; the CLI prints the message alone and exits 2."""


class StudyStopped(UserError):
    """The study cannot go on (e.g. the engine rejects the user's own settings)."""
