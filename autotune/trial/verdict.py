"""How a trial's benchmark ended: the verdict on a finished or cut-off benchmark run, and whom
an invalid configuration blames. Shared by the runner and the in-process landscape
(``autotune.testing.landscape``), so both judge a benchmark alike."""

from __future__ import annotations

import re
import time
from typing import Protocol

from autotune.engine.outcome import Classified, Outcome, classify_runtime
from autotune.load import client as loadgen
from autotune.load.stall import STALLED

MAX_FAILED_SHARE = 0.1  # more failed requests than this makes a configuration unusable
EXIT_GRACE_S = 3.0  # after a cut-off benchmark: how long the engine may take to exit
PRUNED = "pruned"


class Exited(Protocol):
    """What judging reads of the engine (``engine.launcher.Engine``)."""

    def exited(self) -> int | None: ...

    def log_text(self) -> str: ...


def judge(result: loadgen.BenchResult, engine: Exited) -> Classified:
    """How a benchmark ended: the engine's own death (from its log), a hang, a pruned or
    aborted run, images refused, too many failed requests, or OK."""
    if result.aborted and result.aborted != PRUNED:  # a dying engine may still be exiting
        deadline = time.monotonic() + EXIT_GRACE_S
        while engine.exited() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    if (rc := engine.exited()) is not None:
        time.sleep(0.1)
        return classify_runtime(engine.log_text(), returncode=rc)
    if (result.aborted or "").startswith(STALLED):
        return Classified(Outcome.HUNG, hung(result.aborted or ""))
    if result.aborted == PRUNED:
        return Classified(Outcome.PRUNED, "pruned: clearly below the median mid-benchmark")
    if result.aborted:
        return Classified(Outcome.HARNESS_ERROR, f"benchmark aborted: {result.aborted}")
    m = result.metrics
    sent = m.completed + m.failed
    limit = next((e for e in result.errors if _TOO_MANY_IMAGES.search(e)), None)
    if limit is not None:  # a 400 from vLLM: the configuration misses the requirement
        return Classified(Outcome.IMAGE_LIMIT, f"{m.failed}/{sent} requests refused: {limit}")
    if sent and m.failed / sent > MAX_FAILED_SHARE:
        first = result.errors[0] if result.errors else "no message"
        return Classified(Outcome.REQUEST_ERRORS, f"{m.failed}/{sent} requests failed: {first}")
    return Classified(Outcome.OK, f"{m.output_throughput:.1f} output tok/s")


def hung(aborted: str) -> str:
    """The reason of a benchmark that stopped because the engine went silent."""
    return f"engine hung: {aborted.removeprefix(STALLED + ': ')}; alive but silent (stopped?)"


_TOO_MANY_IMAGES = re.compile(r"At most \d+ \w+\(s\) may be provided in one prompt")
_TUNED_NAMES = re.compile(
    r"gpu[_-]memory[_-]utilization|kv[_-]cache[_-]memory[_-]bytes|max[_-]num[_-]seqs|"
    r"max[_-]num[_-]batched[_-]tokens|max[_-]model[_-]len|limit[_-]mm[_-]per[_-]prompt"
)


def blames_tuned_dimension(reason: str, fixed_by_user: frozenset[str]) -> bool:
    """An invalid-configuration message names a setting autotune tuned (not one the user
    fixed): the candidate, not the user, made it invalid."""
    if "unrecognized arguments" in reason:
        return False
    names = {m.group(0).replace("-", "_") for m in _TUNED_NAMES.finditer(reason)}
    return bool(names) and not names <= fixed_by_user
