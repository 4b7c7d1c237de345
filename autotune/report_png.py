"""Static PNG images of a study (matplotlib, Agg): throughput against each tuned parameter, the
optimization history and parameter importances. matplotlib is imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UserError
from autotune.report import (
    MISSING,
    Param,
    Point,
    best_so_far,
    chosen,
    importances,
    points,
    short_name,
    tuned_params,
)

FEASIBLE = "#1f77b4"
INFEASIBLE = "#d62728"
FAILED = "#7f7f7f"
BEST = "#2ca02c"
DPI = 110


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _short(value: float, _pos: object = None) -> str:
    """Tick labels: 512, 2k, 16k, 1.5M."""
    for size, suffix in ((1 << 30, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def write_pngs(*, study: optuna.Study, stem: Path) -> list[Path]:
    """``<stem>-params.png``, ``<stem>-history.png`` and, when computable,
    ``<stem>-importance.png``; the paths written."""
    plt = _pyplot()
    pts, params, number = points(study), tuned_params(study), chosen(study)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figures = [("history", _history(plt, study, pts, number))]
    if params and pts:
        figures.insert(0, ("params", _params(plt, study, pts, params, number)))
    found, _ = importances(study)
    if found:
        figures.append(("importance", _importance(plt, study, found, pts)))
    for name, fig in figures:
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        written.append(path)
    return written


def _params(
    plt: Any, study: optuna.Study, pts: list[Point], params: list[Param], number: int | None
) -> Any:
    """One panel per parameter: throughput on top, infeasible classes in a band below."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ncols = min(2, len(params))
    nrows = -(-len(params) // ncols)
    bad = [p for p in pts if p.kind in ("infeasible", "failed")]
    classes = sorted({p.outcome for p in bad}, key=lambda c: sum(p.outcome == c for p in bad))
    band = max(1.0, 0.45 * len(classes))
    fig = plt.figure(figsize=(7.0 * ncols + 1.5, (3.4 + band) * nrows + 1.0), layout="constrained")
    outer = fig.add_gridspec(nrows, ncols)
    top_y = max((p.throughput or 0.0 for p in pts), default=1.0) * 1.12 or 1.0
    for i, par in enumerate(params):
        inner = outer[i // ncols, i % ncols].subgridspec(2, 1, height_ratios=[3.4, band], hspace=0)
        ax = fig.add_subplot(inner[0])
        low = fig.add_subplot(inner[1], sharex=ax)
        have = [p for p in pts if par.name in p.params]
        good = [p for p in have if p.throughput is not None]
        ax.scatter([p.params[par.name] for p in good], [p.throughput for p in good], s=36,
                   color=FEASIBLE, edgecolors="white", linewidths=0.5, zorder=3,
                   label=f"feasible ({len(good)})")  # fmt: skip
        for p in good:
            if p.number == number:
                ax.scatter([p.params[par.name]], [p.throughput], marker="*", s=320, color="gold",
                           edgecolors="black", linewidths=0.8, zorder=4,
                           label=f"chosen: trial {p.number}")  # fmt: skip
        for kind, colour in (("infeasible", INFEASIBLE), ("failed", FAILED)):
            sel = [p for p in have if p.kind == kind]
            if sel:
                low.scatter([p.params[par.name] for p in sel],
                            [classes.index(p.outcome) for p in sel], marker="x", s=46,
                            color=colour, linewidths=1.6, zorder=3,
                            label=f"{kind} ({len(sel)})")  # fmt: skip
        ax.set_ylim(0, top_y)
        ax.set_ylabel("output tokens/s")
        ax.set_title(par.name, fontsize=11, fontweight="bold")
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=False)
        low.set_facecolor("#fdecec")
        low.set_ylim(-0.6, len(classes) - 0.4)
        low.set_yticks(range(len(classes)))
        counts = [sum(p.outcome == c for p in bad) for c in classes]
        low.set_yticklabels([f"{c} ({n})" for c, n in zip(classes, counts, strict=True)],
                            fontsize=8, color="#a00")  # fmt: skip
        low.grid(axis="y", alpha=0.4)
        low.set_xlabel(par.label)
        if par.log:
            low.set_xscale("log")
            low.xaxis.set_major_locator(LogLocator(base=2))
            low.xaxis.set_minor_locator(LogLocator(base=2, subs=(1.5,)))
            low.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        low.xaxis.set_major_formatter(FuncFormatter(_short))
        pad = (par.high / par.low) ** 0.04 if par.log else (par.high - par.low) * 0.04
        ax.set_xlim(*((par.low / pad, par.high * pad) if par.log else
                      (par.low - pad, par.high + pad)))  # fmt: skip
    legend: dict[str, Any] = {}
    for axis in fig.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label.split(" (")[0], (handle, label))
    fig.legend(*zip(*legend.values(), strict=True), loc="outside lower center",
               ncols=len(legend), fontsize=9)  # fmt: skip
    fig.suptitle(f"Output throughput against each tuned parameter\n{short_name(study)}  "
                 "(infeasible trials in the red band, by failure class)", fontsize=12)  # fmt: skip
    return fig


def _history(plt: Any, study: optuna.Study, pts: list[Point], number: int | None) -> Any:
    """Throughput per trial, infeasible ones at 0, and the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 4.8), layout="constrained")
    good = [p for p in pts if p.throughput is not None]
    bad = [p for p in pts if p.kind in ("infeasible", "failed")]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    line = best_so_far(pts, maximize=maximize)
    if line:
        last = max(p.number for p in pts)
        xs = [n for n, _ in line] + [last]
        ax.step(xs, [v for _, v in line] + [line[-1][1]], where="post", color=BEST, lw=2,
                label="best so far")  # fmt: skip
    ax.scatter([p.number for p in good], [p.throughput for p in good], s=36, color=FEASIBLE,
               zorder=3, label=f"feasible ({len(good)})")  # fmt: skip
    ax.scatter([p.number for p in bad], [0] * len(bad), marker="x", s=46, color=INFEASIBLE,
               linewidths=1.6, zorder=3, clip_on=False,
               label=f"infeasible / failed ({len(bad)}), drawn at 0")  # fmt: skip
    for p in good:
        if p.number == number:
            ax.scatter(
                [p.number],
                [p.throughput],
                marker="*",
                s=320,
                color="gold",
                zorder=4,
                edgecolors="black",
                linewidths=0.8,
                label=f"chosen: trial {p.number}",
            )
    ax.set_ylim(bottom=0, top=max((p.throughput or 0.0 for p in pts), default=1.0) * 1.15 or 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("output tokens/s")
    ax.set_title(f"Optimization history\n{short_name(study)}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=9, frameon=False)
    return fig


def _importance(plt: Any, study: optuna.Study, found: dict[str, float], pts: list[Point]) -> Any:
    """Horizontal bars, most important on top."""
    names = sorted(found, key=found.__getitem__)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.6 * len(names)), layout="constrained")
    bars = ax.barh(names, [found[n] for n in names], color=FEASIBLE)
    ax.bar_label(bars, labels=[f"{found[n]:.2f}" for n in names], padding=3, fontsize=9)
    ax.set_xlim(0, max(found.values()) * 1.15 or 1)
    ax.set_xlabel("importance (PED-ANOVA, Optuna's default evaluator)")
    n = sum(p.kind == "feasible" for p in pts)
    ax.set_title(f"Parameter importances over {n} feasible trials\n{short_name(study)}",
                 fontsize=11)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)
    return fig
