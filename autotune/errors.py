"""The errors autotune raises on purpose. Everything under ``UserError`` reaches the user as one
clear line and a non-zero exit (the CLI prints the message alone and exits 2), never a traceback.

    AutotuneError
    └── UserError                 bad input or an unusable environment
        ├── EngineNotFound        the engine command (--vllm-cmd, vllm serve) cannot be run
        ├── ProfileError          a profile file that cannot be read or is not a valid profile
        ├── StorageError          the study storage cannot be opened or used
        └── StudyStopped          the study cannot go on (the engine rejects the user's settings)
"""

from __future__ import annotations


class AutotuneError(Exception):
    """Base of every error autotune raises on purpose."""


class UserError(AutotuneError):
    """Bad input or an unusable environment; the CLI prints the message alone and exits 2."""


class EngineNotFound(UserError):
    """The command that starts the engine cannot be run here."""


class ProfileError(UserError):
    """A profile file that cannot be read, or is not a valid profile."""


class StorageError(UserError):
    """The study storage cannot be opened or used."""


class StudyStopped(UserError):
    """The study cannot go on (e.g. the engine rejects the user's own settings)."""
