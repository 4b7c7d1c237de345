"""Hypothesis in this suite: derandomized by default, so a CI run is reproducible (the same
examples every run); ``HYPOTHESIS_PROFILE=explore`` draws new ones each run."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
