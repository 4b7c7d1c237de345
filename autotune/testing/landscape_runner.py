"""``LandscapeRunner``: a ``TrialRunner`` that answers from ``FakeTruth`` instead of launching the
fake engine, so autotune's real study loop runs on it in milliseconds per trial."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from autotune.engine.launcher import ArgValue
from autotune.load.request import Request
from autotune.testing.landscape import FakeTruth
from autotune.trial.runner import TrialResult, TrialRunner


@dataclass(frozen=True, kw_only=True)
class LandscapeRunner(TrialRunner):
    """A ``TrialRunner`` that answers from ``FakeTruth`` instead of launching the fake engine.

    ``write_logs``: also write the engine log each trial would have left (off: no files)."""

    truth: FakeTruth
    write_logs: bool = False
    command: Sequence[str] = ()
    model: str = "model"
    requests: Sequence[Request] = field(default=())

    def run(
        self, *, args: Mapping[str, ArgValue], log_path: Path, on_phase: Callable[[str], None]
    ) -> TrialResult:
        on_phase("starting engine (in-process ground truth)")
        st = self.truth.startup(args)
        if st.failure is not None:
            self._stop_on_user_error(st.failure)  # model not found / the user's invalid flags
        result = self.truth.result(args, log_path=log_path)
        if self.write_logs:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text(f"$ {json.dumps(dict(args))}\n{st.log}")
        return result if result.log_path == log_path else replace(result, log_path=log_path)
