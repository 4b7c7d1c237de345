"""The Pareto front of measured configurations (throughput against reserved memory) and its
balanced point, for ``--objective pareto``. Works on ranked candidates; asks Optuna nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune.search.ranking import Candidate


def pareto_front(cands: Sequence[Candidate]) -> list[Candidate]:
    """Feasible candidates no other beats on both throughput (higher) and reservation (lower),
    smallest reservation first; equal points keep the first."""
    front: list[Candidate] = []
    for c in cands:
        if not c.feasible:
            continue
        dominated = any(
            o.throughput >= c.throughput
            and o.reserved_gib <= c.reserved_gib
            and (o.throughput > c.throughput or o.reserved_gib < c.reserved_gib)
            for o in cands
            if o.feasible and o is not c
        )
        same = any((f.throughput, f.reserved_gib) == (c.throughput, c.reserved_gib) for f in front)
        if not dominated and not same:
            front.append(c)
    return sorted(front, key=lambda c: (c.reserved_gib, -c.throughput))


def balanced(front: Sequence[Candidate]) -> Candidate:
    """The front's point nearest the ideal (best throughput at the least memory), each axis
    scaled to the front's range."""
    tputs = [c.throughput for c in front]
    mems = [c.reserved_gib for c in front]
    t_span = (max(tputs) - min(tputs)) or 1.0
    m_span = (max(mems) - min(mems)) or 1.0

    def distance(c: Candidate) -> float:
        dt = (max(tputs) - c.throughput) / t_span
        dm = (c.reserved_gib - min(mems)) / m_span
        return float(dt * dt + dm * dm)

    return min(front, key=distance)
