"""Where autotune keeps its state (studies, logs) and its profiles."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_STATE_DIR = "AUTOTUNE_STATE_DIR"
ENV_PROFILES_DIR = "AUTOTUNE_PROFILES_DIR"


def state_dir(explicit: Path | None = None) -> Path:
    """Study database and trial logs: ``--state-dir``, ``AUTOTUNE_STATE_DIR`` or a per-user dir."""
    if explicit is not None:
        return explicit
    if os.environ.get(ENV_STATE_DIR):
        return Path(os.environ[ENV_STATE_DIR])
    return Path(platformdirs.user_state_dir("autotune"))


def profiles_dir(explicit: Path | None = None) -> Path:
    """Saved profiles: ``--profiles-dir``, ``AUTOTUNE_PROFILES_DIR`` or a per-user data dir."""
    if explicit is not None:
        return explicit
    if os.environ.get(ENV_PROFILES_DIR):
        return Path(os.environ[ENV_PROFILES_DIR])
    return Path(platformdirs.user_data_dir("autotune")) / "profiles"
