"""The failure-class rules (``autotune.memory.rules``) fed from a study's trial records, and
as a pre-screen of their own (no memory model)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from autotune.memory.rules import FailureRules
from autotune.trial.record import TrialRecord


def launched(record: TrialRecord) -> bool:
    return record.launched and bool(record.outcome) and bool(record.vllm_args)


def learn_classes(rules: FailureRules, *, trial: int, record: TrialRecord) -> None:
    """Teach the failure-class rules one launched trial."""
    rules.learn_launch(
        trial=trial, outcome=record.outcome, args=record.vllm_args, startup=record.startup
    )


class ClassScreen:
    """The failure-class rules alone as a study's pre-screen (no memory model, no predictions)."""

    prescreen = True  # its rules skip what they know fails

    def __init__(self, *, image_tokens: int | None) -> None:
        self.rules = FailureRules(image_tokens=image_tokens)

    def learn_all(self, trials: Iterable[tuple[int, TrialRecord]]) -> None:
        for number, record in trials:
            if launched(record):
                learn_classes(self.rules, trial=number, record=record)

    def learn_trial(self, *, trial: int, record: TrialRecord) -> None:
        learn_classes(self.rules, trial=trial, record=record)

    def check(self, args: Mapping[str, Any]) -> str | None:
        return self.rules.check(args)

    def predict_kv_tokens(self, args: Mapping[str, Any]) -> int | None:
        return None

    def memory_edge(self, args: Mapping[str, Any]) -> float | None:
        return None
