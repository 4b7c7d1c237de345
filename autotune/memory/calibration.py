"""Non-KV memory learned from launches: a linear model calibrated on each boot's numbers, and the
lower bounds on it that the pre-screen may act on.

vLLM's non-KV memory (weights, non-torch, peak activation, CUDA graphs) does not depend on the
utilization (vllm-facts §1.3). It grows with the batch settings, so it is modelled as

    non_kv = fixed + a·max_num_batched_tokens + b·min(max_num_seqs, batched) + c·images
             + d·(CUDA graph capture sizes)

with the analytic estimate as a Gaussian prior on the coefficients and every printed number of a
launch as an observation weighted by its rounding (GiB with 2 decimals; the KV cache size in
whole blocks). The fit gives point predictions. Bounds that may reject a candidate come only from
evidence: a launch at the same settings, a launch whose settings the candidate covers (needs no
less memory in any term), or the fitted model once it has predicted each measured launch from
the others (leave-one-out, ``MIN_VALIDATED`` launches), near the measured settings (at most
``MAX_REACH`` widths of their box outside it, never along a term no launch varied); that bound
keeps as slack three posterior standard deviations, twice the leave-one-out error (scaled with
the distance outside the box) and ``MARGIN``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autotune.units import GIB, MIB

ROUNDING = GIB // 200  # vLLM prints GiB with 2 decimals: +-0.005 GiB
MARGIN = 64 * MIB  # slack on every bound (run-to-run noise, allocator rounding)
SIGMAS = 3.0  # posterior standard deviations a model bound keeps as slack
MIN_VALIDATED = 3  # launches with a known KV cache before the model itself may reject
MAX_REACH = 4.0  # how far outside the measured settings the model may bound (box widths)
_SCALE = (1.0, 1024.0, 64.0, 1.0, 16.0)  # units of the features below


@dataclass(frozen=True, kw_only=True)
class Point:
    """The settings that decide non-KV memory: batch sizes, the encoder profile's dummy images and
    the number of CUDA graph capture sizes (0 when eager)."""

    tokens: int
    seqs: int
    images: int = 0
    graphs: int = 0

    @property
    def features(self) -> tuple[float, ...]:
        raw = (1, self.tokens, min(self.seqs, self.tokens), self.images, self.graphs)
        return tuple(x / s for x, s in zip(raw, _SCALE, strict=True))

    def covers(self, other: Point) -> bool:
        """Needs no less memory than ``other`` in any term (dominance)."""
        mine, theirs = self.features, other.features
        return all(a >= b for a, b in zip(mine[1:], theirs[1:], strict=True))


@dataclass(frozen=True, kw_only=True)
class Observation:
    """One launch's memory facts at ``point`` (bytes). ``non_kv`` is an interval: the launch's
    budget (ceil(utilization x total)) minus its KV cache, as exactly as the log tells it."""

    trial: int
    point: Point
    non_kv: tuple[int, int] | None = None
    consumed: int | None = None  # weights + non-torch
    peak: int | None = None
    graph_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class Prior:
    """The analytic estimate of each coefficient (bytes per feature unit) and its 1-sigma doubt."""

    mean: tuple[float, ...]
    sigma: tuple[float, ...]


_Row = tuple[tuple[float, ...], float, float]  # (features, target MiB, sigma MiB)


def _rows(o: Observation) -> list[_Row]:
    x, rows = o.point.features, []
    if o.non_kv is not None:
        lo, hi = o.non_kv
        rows.append((x, (lo + hi) / 2 / MIB, max((hi - lo) / 2, MIB) / MIB))
    if o.consumed is not None:
        rows.append(((1.0, 0.0, 0.0, 0.0, 0.0), o.consumed / MIB, ROUNDING / MIB))
    if o.peak is not None:
        rows.append(((0.0, *x[1:4], 0.0), o.peak / MIB, ROUNDING / MIB))
    if o.graph_bytes is not None and x[4] > 0:
        rows.append(((0.0, 0.0, 0.0, 0.0, x[4]), o.graph_bytes / MIB, ROUNDING / MIB))
    return rows


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (``a`` is small and positive definite)."""
    n = len(b)
    m = [[*row, b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c and m[r][c]:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


_ACTIVATION = (0.0, 1.0, 1.0, 1.0, 0.0)  # the terms of the dummy forward's peak


class Fit:
    """Posterior of the coefficients given the prior and the observations (weighted least
    squares); predictions in bytes with their standard deviation."""

    def __init__(self, prior: Prior, *, observations: Sequence[Observation]) -> None:
        self.observations = tuple(observations)
        self.measured = tuple(o for o in self.observations if o.non_kv is not None)
        n = len(prior.mean)
        rows: list[_Row] = [
            (tuple(float(i == j) for i in range(n)), prior.mean[j] / MIB, prior.sigma[j] / MIB)
            for j in range(n)
        ]
        for o in self.observations:
            rows += _rows(o)
        w = [(r, t, 1 / s**2) for r, t, s in rows]
        self._a = [[sum(r[i] * r[j] * k for r, _, k in w) for j in range(n)] for i in range(n)]
        self._theta = _solve(self._a, [sum(r[i] * t * k for r, t, k in w) for i in range(n)])
        self._prior = prior
        self._loo: tuple[float | None] | None = None

    def mean(self, point: Point, *, part: Sequence[float] = (1.0,) * 5) -> float:
        """Predicted bytes of ``point``'s non-KV memory (``part``: a mask of the terms)."""
        x = [v * m for v, m in zip(point.features, part, strict=True)]
        return sum(t * v for t, v in zip(self._theta, x, strict=True)) * MIB

    def sd(self, point: Point, *, part: Sequence[float] = (1.0,) * 5) -> float:
        """Posterior standard deviation of ``mean`` (bytes)."""
        x = [v * m for v, m in zip(point.features, part, strict=True)]
        var = sum(a * b for a, b in zip(x, _solve(self._a, x), strict=True))
        return math.sqrt(max(0.0, var)) * MIB

    def loo_error(self) -> float | None:
        """Largest error predicting a measured launch's non-KV memory from the others (bytes);
        None until ``MIN_VALIDATED`` launches have a known KV cache."""
        if self._loo is None:
            self._loo = (self._leave_one_out(),)
        return self._loo[0]

    def _leave_one_out(self) -> float | None:
        if len(self.measured) < MIN_VALIDATED:
            return None
        worst = 0.0
        for o in self.measured:
            assert o.non_kv is not None
            rest = Fit(self._prior, observations=[p for p in self.observations if p is not o])
            worst = max(worst, abs(rest.mean(o.point) - sum(o.non_kv) / 2))
        return worst

    def slack(self, point: Point, *, part: Sequence[float] = (1.0,) * 5) -> float | None:
        """What a model bound at ``point`` keeps as slack (bytes); None when the model may not
        bound there: not validated yet, or too far outside the measured settings."""
        error = self.loo_error()
        reach = _reach(point, self.measured) if error is not None else None
        if error is None or reach is None or reach > MAX_REACH:
            return None
        return SIGMAS * self.sd(point, part=part) + 2 * error * (1 + reach) + MARGIN


def _reach(point: Point, measured: Sequence[Observation]) -> float | None:
    """How far ``point`` lies outside the box of the measured settings, in widths of the box
    (0 inside; None along a term that no two launches varied)."""
    xs = [o.point.features for o in measured]
    if not xs:
        return None
    worst = 0.0
    for j, v in enumerate(point.features):
        lo, hi = min(x[j] for x in xs), max(x[j] for x in xs)
        out = max(lo - v, v - hi, 0.0)
        if out > 0 and hi == lo:
            return None
        worst = max(worst, out / (hi - lo) if out else 0.0)
    return worst


def non_kv_floor(point: Point, *, fit: Fit) -> tuple[int, str] | None:
    """The largest lower bound on ``point``'s non-KV bytes that the evidence supports, and why:
    a launch at the same settings, a launch ``point`` covers, or the validated model."""
    best: tuple[int, str] | None = None
    for o in fit.measured:
        assert o.non_kv is not None
        if point == o.point:
            found = (o.non_kv[0] - MARGIN, f"measured at these batch settings in trial {o.trial}")
        elif point.covers(o.point):
            found = (o.non_kv[0] - MARGIN, f"batches at least those of trial {o.trial}")
        else:
            continue
        best = found if best is None or found[0] > best[0] else best
    slack = fit.slack(point)
    if slack is not None:
        found = (int(fit.mean(point) - slack), f"model calibrated on {len(fit.measured)} launches")
        best = found if best is None or found[0] > best[0] else best
    return best


def activation_floor(point: Point, *, fit: Fit) -> int | None:
    """A lower bound on the dummy forward's peak activation at ``point`` (bytes), from the
    validated model; None when it may not bound there."""
    slack = fit.slack(point, part=_ACTIVATION)
    return None if slack is None else int(fit.mean(point, part=_ACTIVATION) - slack)


def non_kv_estimate(point: Point, *, fit: Fit) -> float:
    """Best guess of ``point``'s non-KV bytes: a launch at the same settings, else the fit."""
    same = [sum(o.non_kv) / 2 for o in fit.measured if o.point == point and o.non_kv]
    return sum(same) / len(same) if same else fit.mean(point)
