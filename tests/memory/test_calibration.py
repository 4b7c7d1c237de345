"""Non-KV memory calibration: the fit, its validation and the bounds the pre-screen may use."""

from __future__ import annotations

from autotune.memory.calibration import (
    MARGIN,
    Fit,
    Observation,
    Point,
    Prior,
    activation_floor,
    non_kv_estimate,
    non_kv_floor,
)
from autotune.memory.estimates import capture_sizes
from autotune.units import GIB, MIB

# a made-up engine: 15 GiB fixed, 200 KiB per batched token, 1 MiB per sequence, 40 MiB a graph
FIXED, PER_TOKEN, PER_SEQ, PER_GRAPH = 15 * GIB, 200 * 1024, MIB, 40 * MIB
PRIOR = Prior(  # the analytic guess is off by 2x in every variable term
    mean=(14.0 * GIB, 100 * 1024 * 1024.0, 2 * MIB * 64.0, 0.0, 20 * MIB * 16.0),
    sigma=(2.0 * GIB, 100 * 1024 * 1024.0, 2 * MIB * 64.0, 16.0 * MIB, 20 * MIB * 16.0),
)


def point(tokens: int, seqs: int) -> Point:
    graphs = len(capture_sizes(max_num_seqs=seqs, max_num_batched_tokens=tokens))
    return Point(tokens=tokens, seqs=seqs, graphs=graphs)


def truth(p: Point) -> int:
    return FIXED + PER_TOKEN * p.tokens + PER_SEQ * min(p.seqs, p.tokens) + PER_GRAPH * p.graphs


def measured(trial: int, p: Point, *, breakdown: bool = False) -> Observation:
    """A launch whose KV cache is known to a 2 MiB block: the budget minus it brackets non-KV."""
    t = truth(p)
    extra = {}
    if breakdown:  # 0.33's "Actual usage is ..." line
        act = PER_TOKEN * p.tokens + PER_SEQ * min(p.seqs, p.tokens)
        extra = {"consumed": FIXED, "peak": act, "graph_bytes": PER_GRAPH * p.graphs}
    return Observation(trial=trial, point=p, non_kv=(t - MIB, t + MIB), **extra)


def test_one_breakdown_fixes_the_fixed_part_and_graphs() -> None:
    a = point(2048, 256)
    fit = Fit(PRIOR, observations=[measured(0, a, breakdown=True)])
    assert abs(fit.mean(a) - truth(a)) < 2 * MIB  # reproduces its own launch
    assert abs(non_kv_estimate(a, fit=fit) - truth(a)) <= MIB
    assert fit.loo_error() is None  # one launch validates nothing: the model may not bound yet
    assert activation_floor(point(4096, 256), fit=fit) is None
    floor = non_kv_floor(a, fit=fit)  # but the same settings are known
    assert floor is not None and floor[0] == truth(a) - MIB - MARGIN and "trial 0" in floor[1]
    covers = non_kv_floor(point(4096, 256), fit=fit)  # more of everything: at least as much
    assert covers is not None and covers[0] == floor[0] and "at least those" in covers[1]
    assert non_kv_floor(point(1024, 256), fit=fit) is None  # less: nothing certain


def test_three_launches_validate_the_model() -> None:
    launches = [point(2048, 256), point(8192, 32), point(512, 128)]  # any two independent
    fit = Fit(PRIOR, observations=[measured(i, p, breakdown=True) for i, p in enumerate(launches)])
    error = fit.loo_error()
    assert error is not None and error < 16 * MIB
    for p in (point(4096, 128), point(16384, 8), point(1024, 200)):
        assert abs(fit.mean(p) - truth(p)) < 8 * MIB, p
        floor = non_kv_floor(p, fit=fit)
        assert floor is not None and floor[0] <= truth(p) and "model calibrated" in floor[1]
        assert truth(p) - floor[0] < 256 * MIB  # and still useful
    peak = activation_floor(point(8192, 256), fit=fit)
    assert peak is not None and peak <= PER_TOKEN * 8192 + PER_SEQ * 256


def test_no_bound_along_a_term_no_launch_varied() -> None:
    launches = [point(1024, 64), point(4096, 64), point(8192, 64)]
    fit = Fit(PRIOR, observations=[measured(i, p) for i, p in enumerate(launches)])
    assert fit.loo_error() is not None
    assert fit.slack(point(2048, 64)) is not None
    assert fit.slack(point(2048, 128)) is None  # sequences never varied: unknown slope
    assert fit.slack(Point(tokens=2048, seqs=64, images=3, graphs=19)) is None
    far = Point(tokens=200_000, seqs=64, graphs=launches[0].graphs)
    assert fit.slack(far) is None  # far outside the measured settings


def test_without_breakdowns_the_error_widens_the_slack() -> None:
    """Failed launches print no breakdown: three totals cannot pin four terms, and the
    leave-one-out error says so; bounds stay below the truth."""
    launches = [point(2048, 256), point(8192, 32), point(512, 64)]
    fit = Fit(PRIOR, observations=[measured(i, p) for i, p in enumerate(launches)])
    error = fit.loo_error()
    assert error is not None and error > 64 * MIB
    for p in (point(4096, 128), point(1024, 200)):
        floor = non_kv_floor(p, fit=fit)
        assert floor is None or floor[0] <= truth(p)


def test_no_launch_with_a_known_kv_cache_bounds_nothing() -> None:
    # observations whose KV cache was never logged (e.g. startup failures before the KV phase)
    unknown = Observation(trial=0, point=point(2048, 64), non_kv=None)
    fit = Fit(PRIOR, observations=[unknown])
    assert fit.measured == () and fit.slack(point(4096, 64)) is None
    assert activation_floor(point(4096, 64), fit=fit) is None
    assert non_kv_floor(point(4096, 64), fit=fit) is None
