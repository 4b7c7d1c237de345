"""Static PNG images of a study (matplotlib, Agg): throughput against each tuned parameter, the
optimization history and parameter importances. matplotlib is imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UserError
from autotune.report.capacity_plot import capacity_view
from autotune.report.capacity_plot import png_figure as capacity_png
from autotune.report.data import (
    MISSING,
    Importances,
    Param,
    Point,
    best_so_far,
    chosen,
    importances,
    points,
    tick,
    tuned_params,
)

DPI = 110
BEST = "#2ca02c"
KINDS = {"infeasible": "#d62728", "failed": "#7f7f7f"}  # marker colour of the trials that failed
FEASIBLE = {"s": 36, "color": "#1f77b4", "edgecolors": "white", "linewidths": 0.5, "zorder": 3}
STAR = {"marker": "*", "s": 320, "color": "gold", "edgecolors": "black", "linewidths": 0.8}
CROSS = {"marker": "x", "s": 46, "linewidths": 1.6, "zorder": 3, "clip_on": False}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_name(study: optuna.Study) -> str:
    """model@hardware@workload@objective (without the space hash)."""
    return "@".join(study.study_name.split("@")[:4])


def write_pngs(*, study: optuna.Study, stem: Path) -> list[Path]:
    """``<stem>-params.png``, ``<stem>-history.png`` and, when computable,
    ``<stem>-importance.png`` and ``<stem>-capacity.png``; the paths written."""
    plt = _pyplot()
    pts, params, number = points(study), tuned_params(study), chosen(study)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures = [("history", _history(plt, study, pts, number))]
    if params and pts:
        figures.insert(0, ("params", _params(plt, study, pts, params, number)))
    imp = importances(study)
    if imp.values:
        figures.append(("importance", _importance(plt, study, imp)))
    if (view := capacity_view(study)) is not None:
        figures.append(("capacity", capacity_png(plt, view)))
    for name, fig in figures:
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)
    return written


def _params(
    plt: Any, study: optuna.Study, pts: list[Point], params: list[Param], number: int | None
) -> Any:
    """One panel per parameter: throughput on top, the failure classes in a red band below."""
    ncols = min(2, len(params))
    nrows = -(-len(params) // ncols)
    bad = [p for p in pts if p.kind in KINDS]
    classes = sorted({p.outcome for p in bad}, key=lambda c: sum(p.outcome == c for p in bad))
    counts = [sum(p.outcome == c for p in bad) for c in classes]
    band = max(0.8, 0.42 * len(classes))
    size = (7.0 * ncols + 1.5, (3.4 + band) * nrows + 1.2)
    fig = plt.figure(figsize=size, layout="constrained")
    outer = fig.add_gridspec(nrows, ncols)
    top_y = max((p.throughput or 0.0 for p in pts), default=1.0) * 1.12 or 1.0
    for i, par in enumerate(params):
        inner = outer[i // ncols, i % ncols].subgridspec(2, 1, height_ratios=[3.4, band], hspace=0)
        ax = fig.add_subplot(inner[0])
        low = fig.add_subplot(inner[1], sharex=ax)
        have = [p for p in pts if par.name in p.params]
        good = [p for p in have if p.throughput is not None]
        xs = [p.params[par.name] for p in good]
        ax.scatter(xs, [p.throughput for p in good], label=f"feasible ({len(good)})", **FEASIBLE)
        for p in good:
            if p.number == number:
                ax.scatter([p.params[par.name]], [p.throughput], zorder=4,
                           label=f"chosen: trial {p.number}", **STAR)  # fmt: skip
        for kind, colour in KINDS.items():
            sel = [p for p in have if p.kind == kind]
            if sel:
                low.scatter([p.params[par.name] for p in sel],
                            [classes.index(p.outcome) for p in sel], color=colour,
                            label=f"{kind} ({len(sel)})", **CROSS)  # fmt: skip
        if not good:
            ax.text(0.5, 0.5, "no feasible trial", transform=ax.transAxes, ha="center",
                    va="center", fontsize=10, color="#777")  # fmt: skip
        ax.set_ylim(0, top_y)
        ax.set_ylabel("output tokens/s")
        ax.set_title(par.name, fontsize=11, fontweight="bold")
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False)
        _band(low, classes, counts, labels=i % ncols == 0)
        low.set_xlabel(par.label)
        _x_axis(low, par)
    legend: dict[str, Any] = {}
    for axis in fig.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label.split(" (")[0], (handle, label))
    fig.legend(*zip(*legend.values(), strict=True), loc="outside lower center",
               ncols=len(legend), fontsize=9, frameon=False)  # fmt: skip
    fig.suptitle(f"Output throughput against each tuned parameter: {short_name(study)}\n"
                 "trials that could not serve are in the red band, by failure class",
                 fontsize=12)  # fmt: skip
    return fig


def _band(low: Any, classes: list[str], counts: list[int], *, labels: bool) -> None:
    """The failure-class rows under a panel (class names on the left-hand panels only)."""
    low.set_facecolor("#fdecec")
    low.set_ylim(-0.6, max(len(classes), 1) - 0.4)
    low.set_yticks(range(len(classes)))
    names = [f"{c} ({n})" for c, n in zip(classes, counts, strict=True)]
    low.set_yticklabels(names if labels else [""] * len(names), fontsize=8, color="#a00")
    low.tick_params(axis="y", length=0 if not labels else 3.5)
    low.grid(axis="y", alpha=0.4)
    if not classes:
        low.set_yticks([])
        low.text(0.5, 0.5, "no failed trials", transform=low.transAxes, ha="center",
                 va="center", fontsize=8, color="#777")  # fmt: skip


def _x_axis(low: Any, par: Param) -> None:
    """Log scale for a range over 20x (ticks at powers of two), a little room at both ends."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if par.log:
        low.set_xscale("log")
        low.xaxis.set_major_locator(LogLocator(base=2))
        low.xaxis.set_minor_locator(LogLocator(base=2, subs=(1.5,)))
        low.xaxis.set_minor_formatter(NullFormatter())
        pad = (par.high / par.low) ** 0.04
        low.set_xlim(par.low / pad, par.high * pad)
    else:
        pad = (par.high - par.low) * 0.04
        low.set_xlim(par.low - pad, par.high + pad)
    low.xaxis.set_major_formatter(FuncFormatter(tick))


def _history(plt: Any, study: optuna.Study, pts: list[Point], number: int | None) -> Any:
    """Throughput per trial, the trials that failed at 0, and the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    good = [p for p in pts if p.throughput is not None]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    line = best_so_far(pts, maximize=maximize)
    if line:  # to half a trial past the last one, so that the last step shows
        xs = [n for n, _ in line] + [max(p.number for p in pts) + 0.5]
        ys = [v for _, v in line] + [line[-1][1]]
        ax.step(xs, ys, where="post", color=BEST, lw=2, label="best so far")
    ax.scatter([p.number for p in good], [p.throughput for p in good],
               label=f"feasible ({len(good)})", **FEASIBLE)  # fmt: skip
    for kind, colour in KINDS.items():
        sel = [p.number for p in pts if p.kind == kind]
        if sel:
            ax.scatter(sel, [0] * len(sel), color=colour, label=f"{kind} ({len(sel)}), at 0",
                       **CROSS)  # fmt: skip
    for p in good:
        if p.number == number:
            ax.scatter([p.number], [p.throughput], zorder=4, label=f"chosen: trial {p.number}",
                       **STAR)  # fmt: skip
    ax.set_ylim(bottom=0, top=max((p.throughput or 0.0 for p in pts), default=1.0) * 1.15 or 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"Optimization history: {short_name(study)}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=5, fontsize=9, frameon=False)
    return fig


def _importance(plt: Any, study: optuna.Study, imp: Importances) -> Any:
    """Horizontal bars, most important on top; the trial count in the title, the parameters
    left out (never varied) under the axis."""
    found = imp.values
    names = sorted(found, key=found.__getitem__)
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.6 * len(names)), layout="constrained")
    bars = ax.barh(names, [found[n] for n in names], color="#1f77b4")
    ax.bar_label(bars, labels=[f"{found[n]:.2f}" for n in names], padding=3, fontsize=9)
    ax.set_xlim(0, max(found.values()) * 1.15 or 1)
    ax.set_xlabel(
        "importance for output throughput (PED-ANOVA, Optuna's default evaluator)\n" + imp.note
    )
    ax.set_title(f"{imp.title}\n{short_name(study)}", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return fig
