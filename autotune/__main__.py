"""``python -m autotune``."""

from __future__ import annotations

from autotune.cli.main import main

main()
