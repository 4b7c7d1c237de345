"""Local moves: a compass search on the best configuration's batch settings (see
``autotune.search.moves.edge``). Pure: no Optuna."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from autotune.engine.defaults import Value
from autotune.engine.outcome import Outcome
from autotune.search.moves.edge import (
    BATCH_DIMS,
    COMPASS,
    Climb,
    Tried,
    batch_valid,
    best_of,
    fit_memory,
    memory_dim,
)
from autotune.search.space import SearchSpace

SEQS = "max_num_seqs"


def local_move(
    *,
    space: SearchSpace,
    tried: Sequence[Tried],
    rng: random.Random,
    expected: Callable[[Mapping[str, Value]], float | None] | None = None,
) -> Climb | None:
    """A compass search on the best configuration's batch settings (memory kept): multiply or
    divide one of them by the largest factor whose neighbours are not all tried yet. The
    sampler finds the region; these moves refine the batch settings at the edge.

    Which way first follows what vLLM reported for the best configuration's benchmark: a full
    KV cache (``Tried.kv_pressure``) goes down first, since fewer batched tokens and sequences leave
    more memory to the KV cache; otherwise up first (larger batches, until memory binds)."""
    ok = [t for t in tried if t.outcome == Outcome.OK.value and t.value is not None]
    dims = [d for d in space.tuned if d.name in BATCH_DIMS]
    if not ok or not dims:
        return None
    best = best_of(ok, memory=getattr(memory_dim(space), "name", ""))
    seen = [dict(t.params) for t in tried]
    for factor in COMPASS:
        moves = []
        for d in dims:
            x = best.params.get(d.name)
            for scale in (factor, 1.0 / factor):
                if x is None or (y := d.clamp(round(float(x) * scale))) == x:
                    continue
                if d.name == SEQS and unbound(ok, base=best.params, seqs=(int(x), int(y))):
                    continue
                params = fit_memory(space, batch_valid(dict(best.params) | {d.name: y}), expected)
                if params not in seen and params != dict(best.params):
                    way = "up" if y > x else "down"
                    moves.append(Climb(params=params, why=f"local: {d.name} {way} {x} -> {y}"))
        first = "down" if best.kv_pressure() == "full" else "up"
        preferred = [m for m in moves if f" {first} " in m.why]
        if preferred or moves:
            return rng.choice(preferred or moves)
    return None


def unbound(ok: Sequence[Tried], *, base: Mapping[str, Value], seqs: tuple[int, int]) -> bool:
    """Both ``max_num_seqs`` settings are above what ran at once in a launch with ``base``'s
    other settings whose limit did not bind (fewer requests ran at once than it allowed: the KV
    cache or the load held them back): neither limit would bind, so the move measures noise."""
    others = {k: v for k, v in base.items() if k != SEQS}
    for t in ok:
        limit, peak = t.params.get(SEQS), t.peak_running
        if limit is None or peak is None or int(limit) <= peak:
            continue
        if {k: v for k, v in t.params.items() if k != SEQS} == others and min(seqs) >= peak:
            return True
    return False
