"""Choosing among measured configurations: repeats grouped, a conservative statistic, the noise
band, and the Pareto front. Works on finished trials; asks Optuna nothing."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from autotune.engine.multimodal import image_count
from autotune.engine.outcome import Outcome
from autotune.search.goal import Goal
from autotune.search.moves.alike import runs_alike
from autotune.search.moves.edge import KV_TIGHT
from autotune.search.pareto import pareto_front
from autotune.search.space import memory_name
from autotune.trial.record import NO_RESULT, TrialRecord

USABLE_SHARE = 0.5  # --images max: "usable" is at least this share of the best throughput
STATISTICS = ("worst", "median")
SAME_HEADROOM = 0.03  # reservations within this share of the least one count as equal headroom


class Finished(Protocol):
    """What choosing reads of a finished trial (``optuna.trial.FrozenTrial``)."""

    number: int

    @property
    def values(self) -> list[float] | None: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    @property
    def constraints(self) -> dict[str, float]: ...


def args_key(args: Any) -> str:
    return json.dumps(args, sort_keys=True, default=str)


@dataclass(frozen=True)
class Candidate:
    """One configuration and every measurement of it."""

    trials: tuple[Finished, ...]  # its launched trials, oldest first (then ``_pooled``'s)
    feasible: bool  # every measurement served and met the limits
    value: float  # the conservative statistic of the primary objective
    chosen: Finished  # the measurement that statistic came from (of its own runs, if pooled)
    throughput: float  # conservative output tok/s (the Pareto front's first axis)
    reserved_gib: float

    @property
    def args(self) -> dict[str, Any]:
        return dict(TrialRecord.of(self.chosen).vllm_args)

    @property
    def measured(self) -> list[float]:
        return [_throughput(t) for t in self.trials]

    @property
    def disagreement(self) -> float:
        """How far its repeats differ: (highest - lowest) / highest of the primary objective's
        runs (0 for one run)."""
        values = _primary(self)
        top = max(abs(v) for v in values)
        return (max(values) - min(values)) / top if top else 0.0

    def spread(self) -> dict[str, Any]:
        """The repeats of this configuration, for the profile."""
        values = self.measured
        mid = statistics.median(values)
        return {
            "repeats": len(values),
            "output_throughput": [round(v, 2) for v in values],
            "spread": round((max(values) - min(values)) / mid, 4) if mid else 0.0,
            "trials": [t.number for t in self.trials],
        }


def _throughput(t: Finished) -> float:
    return TrialRecord.of(t).throughput or 0.0


def _pick(items: Sequence[Finished], key: Any, *, statistic: str, worst_first: bool) -> Finished:
    """The measurement of the conservative statistic (an actual run, never an average)."""
    ordered = sorted(items, key=key, reverse=not worst_first)  # worst first
    return ordered[0] if statistic == "worst" else ordered[(len(ordered) - 1) // 2]


def candidates(trials: Iterable[Finished], *, goal: Goal, statistic: str) -> list[Candidate]:
    """Launched trials grouped by their arguments; a group is feasible only if every run was."""
    groups: dict[str, list[Finished]] = {}
    for t in trials:
        record = TrialRecord.of(t)
        if not record.launched or record.outcome in (None, *NO_RESULT):
            continue
        if record.outcome == Outcome.HARNESS_ERROR.value:
            continue
        groups.setdefault(args_key(record.vllm_args), []).append(t)
    out = []
    maximize = goal.directions[0] == "maximize"
    for own, runs in _pooled(list(groups.values())):
        if not all(_served(t) for t in runs):
            out.append(Candidate(tuple(runs), False, 0.0, runs[-1], 0.0, 0.0))
            continue

        def primary(t: Finished) -> float:
            return float((t.values or [0.0])[0])

        chosen = _pick(own, primary, statistic=statistic, worst_first=maximize)
        slow = _pick(runs, _throughput, statistic=statistic, worst_first=True)
        reserved = _reserved(own)
        # The median of two runs is their mean: the worse of two would count a slow outlier
        # in full (``chosen`` stays an actual run: the lower middle one).
        value = (
            statistics.median(map(primary, runs))
            if statistic == "median"
            else primary(_pick(runs, primary, statistic=statistic, worst_first=maximize))
        )
        out.append(Candidate(tuple(runs), True, value, chosen, _throughput(slow), reserved))
    return out


def _served(t: Finished) -> bool:
    return (
        TrialRecord.of(t).ok
        and t.values is not None
        and all(v <= 0 for v in t.constraints.values())
    )


def _pooled(groups: list[list[Finished]]) -> list[tuple[list[Finished], list[Finished]]]:
    """Each configuration's runs, and the runs it is judged on: its own, then those of the
    configurations that ran alike with it (``moves.alike.ran_alike``: the same settings but the
    memory one, a KV cache that never bound, the same peak running; they differ by the
    machine's noise alone). Those are one candidate: the configuration reserving the least
    memory (the tie rule's choice) with every run of them."""
    classes: dict[str, list[list[Finished]]] = {}
    order: list[str | list[Finished]] = []
    for runs in groups:
        key = _alike(runs)
        if key is None:
            order.append(runs)
            continue
        if key not in classes:
            order.append(key)
        classes.setdefault(key, []).append(runs)
    out = []
    for item in order:
        if not isinstance(item, str):
            out.append((item, item))
            continue
        members = sorted(classes[item], key=lambda r: (_reserved(r), r[0].number))
        out.append((members[0], [t for runs in members for t in runs]))
    return out


def _alike(runs: list[Finished]) -> str | None:
    """The class of launches every run of a configuration ran alike with, if one."""
    if not all(_served(t) for t in runs):
        return None
    records = [TrialRecord.of(t) for t in runs]
    memory = memory_name(records[0].params or {})
    if memory is None:
        return None
    return runs_alike(records, memory=memory)


def _reserved(runs: list[Finished]) -> float:
    return max(TrialRecord.of(t).reserved_gib or 0.0 for t in runs)


QUIET = 0.2  # repeats that agree within this share of ``--noise``: a quiet machine ...
QUIET_PAIRS = 2  # ... once this many configurations ran twice, all of them that close


def quiet(cands: Sequence[Candidate], *, noise: float) -> bool:
    """The machine is quiet: ``QUIET_PAIRS`` or more configurations ran more than once and the
    runs of every one of them agree within ``QUIET`` x ``noise``. One run then says what a
    configuration does: it ranks as fully measured, and re-measuring finalists would buy nothing
    (``search.finalize`` searches on instead). A slow outlier in any repeat says otherwise."""
    twice = [c for c in cands if len(c.trials) >= 2]
    return len(twice) >= QUIET_PAIRS and all(c.disagreement <= QUIET * noise for c in twice)


def rank(
    cands: Sequence[Candidate], *, goal: Goal, noise: float, repeats: int = 1, most_images: bool
) -> list[Candidate]:
    """Feasible candidates, best first. Fully re-measured ones (``repeats`` runs) come before the
    rest. Within ``noise`` of the best value the longest ``max_model_len`` wins. On a ``quiet``
    machine one run is a full measurement, and the noise is what its repeats showed
    (``QUIET`` x ``noise``)."""
    feasible = [c for c in cands if c.feasible]
    if quiet(feasible, noise=noise):
        repeats, noise = 1, QUIET * noise
    full = [c for c in feasible if len(c.trials) >= repeats]
    rest = [c for c in feasible if len(c.trials) < repeats]
    return _rank(full, goal, noise, most_images) + _rank(rest, goal, noise, most_images)


def _rank(cands: list[Candidate], goal: Goal, noise: float, most_images: bool) -> list[Candidate]:
    if not cands:
        return []
    if goal.multi:
        return pareto_front(cands) + [c for c in cands if c not in pareto_front(cands)]
    maximize = goal.directions[0] == "maximize"
    sign = 1.0 if maximize else -1.0
    top = max(sign * c.value for c in cands)
    if most_images:
        usable = [c for c in cands if c.value >= USABLE_SHARE * top]
        first = sorted(usable, key=lambda c: (image_count(c.args) or 0, c.value), reverse=True)
        return first + sorted((c for c in cands if c not in first), key=lambda c: -c.value)
    leader = max(cands, key=lambda c: sign * c.value)
    near = [c for c in cands if indistinguishable(c, leader, noise=noise, sign=sign)]
    most = max((c.reserved_gib for c in near), default=0.0)
    least: dict[int, float] = {}  # the least reservation per context length
    for c in near:
        least[_length(c)] = min(_spare(c, most), least.get(_length(c), most))

    def preferred(c: Candidate) -> tuple[int, float, bool, bool, float, float]:
        length, on = _length(c), prefix_caching_on(c.args)
        headroom = max(_spare(c, most), least[length] * (1 + SAME_HEADROOM))
        return (length, -headroom, on, unpreempted(c), running(c), sign * c.value)

    first = sorted(near, key=preferred, reverse=True)
    return first + sorted((c for c in cands if c not in near), key=lambda c: -sign * c.value)


def indistinguishable(a: Candidate, b: Candidate, *, noise: float, sign: float = 1.0) -> bool:
    """The rule for calling two measured configurations equal: their statistics differ by at
    most ``noise`` of the better one, and, when both were measured more than once, their
    measurements overlap (no run of one beats every run of the other) and the statistics differ
    by at most half the wider spread of repeats (the difference is inside the noise actually
    seen). Among equals the longer context wins, then the smaller reservation (more memory
    headroom; within ``SAME_HEADROOM`` counts as equal, and none is credited to a configuration
    whose KV cache was tight: ``_spare``), then prefix caching on (vLLM's default: no surprise
    for operators), then no preemptions (``unpreempted``), then more requests running at once
    (``running``), then the value."""
    hi, lo = max(sign * a.value, sign * b.value), min(sign * a.value, sign * b.value)
    if hi - lo > noise * abs(hi):
        return False
    if len(a.trials) < 2 or len(b.trials) < 2:
        return True
    ra, rb = _primary(a), _primary(b)
    half = max(max(ra) - min(ra), max(rb) - min(rb)) / 2
    return min(ra) <= max(rb) and min(rb) <= max(ra) and hi - lo <= half


def _spare(c: Candidate, most: float) -> float:
    """Its reservation as headroom: ``most`` (no credit) where its KV cache was tight in a run
    (``KV_TIGHT`` used at the peak, or preemptions): memory it needed, not memory to spare."""
    records = [TrialRecord.of(t) for t in c.trials]
    tight = any(r.preemptions or (r.peak_kv_cache_usage_pct or 0.0) >= KV_TIGHT for r in records)
    return most if tight else c.reserved_gib


def _length(c: Candidate) -> int:
    return int(c.args.get("max_model_len", 0))


def running(c: Candidate) -> float:
    """The most requests vLLM ran at once (its counter's peak; the median over the runs, 0 where
    unknown): decode steps serve every running request at nearly one step's cost, so of two
    configurations the noise cannot tell apart, the one that ran more at once is likely faster."""
    peaks = [TrialRecord.of(t).peak_requests_running for t in c.trials]
    known = [p for p in peaks if p is not None]
    return float(statistics.median(known)) if known else 0.0


def unpreempted(c: Candidate) -> bool:
    """No run of it preempted a request (vLLM's counter): recomputing preempted requests is
    work lost, so among equals the configuration that never did is the safer one."""
    return not any(TrialRecord.of(t).preemptions for t in c.trials)


def prefix_caching_on(args: dict[str, Any]) -> bool:
    """Whether a configuration serves with prefix caching (vLLM's default unless turned off)."""
    return args.get("enable_prefix_caching") is not False


def _primary(c: Candidate) -> list[float]:
    return [float((t.values or [0.0])[0]) for t in c.trials]
