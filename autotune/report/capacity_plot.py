"""``--objective capacity`` in the report: output throughput and each SLO percentile against the
offered request rate, for the chosen and the runner-up configuration (by capacity), with the SLO
limits and each capacity marked. Plotly (HTML) and matplotlib (PNG) draw the same curves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from autotune.report.data import chosen
from autotune.search import study_keys as keys
from autotune.search.goal import SLO_METRICS
from autotune.trial.record import TrialRecord

COLOURS = ("#1f77b4", "#ff7f0e")


@dataclass(frozen=True)
class Curve:
    """One configuration's rate steps, in increasing rate."""

    label: str
    capacity: float | None
    rates: tuple[float, ...]
    met: tuple[bool, ...]
    throughput: tuple[float, ...]
    latency: dict[str, tuple[float, ...]]  # SLO metric key → its value at each rate


@dataclass(frozen=True)
class CapacityView:
    """The curves to draw and the SLO limits (metric key, limit in ms)."""

    curves: tuple[Curve, ...]
    slos: tuple[tuple[str, float], ...]


def capacity_view(study: optuna.Study) -> CapacityView | None:
    """The chosen configuration (else the highest capacity) and the runner-up, the best of the
    other configurations; None when no trial ran a capacity search."""
    goal = (study.user_attrs.get(keys.INPUTS) or {}).get("goal") or {}
    slos = tuple(
        (SLO_METRICS[str(n)], float(v)) for n, v in goal.get("slos", []) if n in SLO_METRICS
    )
    found = []
    for t in study.get_trials(deepcopy=False):
        record = TrialRecord.of(t)
        if record.capacity is not None and record.capacity.points:
            found.append((t.number, record))
    if not found:
        return None
    found.sort(key=lambda f: -_rate(f[1]))
    number = chosen(study)
    first = next((f for f in found if f[0] == number), found[0])
    others = [f for f in found if f[1].vllm_args != first[1].vllm_args]
    picked = [(first, "chosen" if first[0] == number else "best")]
    picked += [(others[0], "runner-up")] if others else []
    return CapacityView(tuple(_curve(n, r, role, slos) for (n, r), role in picked), slos)


def _rate(record: TrialRecord) -> float:
    return (record.capacity.rate if record.capacity else None) or 0.0


def _curve(
    number: int, record: TrialRecord, role: str, slos: tuple[tuple[str, float], ...]
) -> Curve:
    assert record.capacity is not None
    points = sorted(record.capacity.points, key=lambda p: p.rate)
    rate = record.capacity.rate
    text = f"{rate:.3g} requests/s" if rate is not None else "no rate met the SLOs"
    args = " ".join(f"{k}={v}" for k, v in record.vllm_args.items() if k.startswith("max_num"))
    values = [p.metrics.to_dict() for p in points]
    return Curve(
        label=f"trial {number} ({role}): capacity {text}; {args}".rstrip("; "),
        capacity=rate,
        rates=tuple(p.rate for p in points),
        met=tuple(p.met for p in points),
        throughput=tuple(p.metrics.output_throughput for p in points),
        latency={key: tuple(float(v[key]) for v in values) for key, _ in slos},
    )


def _panels(view: CapacityView) -> list[tuple[str, str | None, float | None]]:
    """(title, SLO metric or None for throughput, limit)."""
    out: list[tuple[str, str | None, float | None]] = [("output tokens/s", None, None)]
    return out + [(f"{key} (ms)", key, limit) for key, limit in view.slos]


def _ys(curve: Curve, key: str | None) -> tuple[float, ...]:
    return curve.throughput if key is None else curve.latency[key]


def html_figure(go: Any, view: CapacityView) -> Any:
    """Plotly: one panel per quantity, a line per configuration (open markers: missed)."""
    from plotly.subplots import make_subplots

    panels = _panels(view)
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[p[0] for p in panels])  # fmt: skip
    for row, (title, key, limit) in enumerate(panels, start=1):
        for i, curve in enumerate(view.curves):
            colour = COLOURS[i % len(COLOURS)]
            symbols = ["circle" if m else "circle-open" for m in curve.met]
            fig.add_trace(go.Scatter(
                x=curve.rates, y=_ys(curve, key), mode="lines+markers", name=curve.label,
                legendgroup=curve.label, showlegend=row == 1, line_color=colour,
                marker={"symbol": symbols, "size": 9},
                hovertemplate="%{x:.3g} requests/s: %{y:.4g}<extra></extra>",
            ), row=row, col=1)  # fmt: skip
            if curve.capacity is not None:
                fig.add_vline(x=curve.capacity, line_dash="dot", line_color=colour, row=row, col=1)
        if limit is not None:
            fig.add_hline(y=limit, line_dash="dash", line_color="#d62728", row=row, col=1,
                          annotation_text=f"SLO {limit:g} ms")  # fmt: skip
        fig.update_yaxes(title_text=title, rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="offered request rate (requests/s)", row=len(panels), col=1)
    fig.update_layout(height=300 * len(panels) + 120, title="Capacity: throughput and SLO "
                      "percentiles against request rate (open markers: missed)")  # fmt: skip
    return fig


def png_figure(plt: Any, view: CapacityView) -> Any:
    """matplotlib: the same panels as ``html_figure``."""
    panels = _panels(view)
    size = (9.0, 2.8 * len(panels) + 1.4)
    fig, axes = plt.subplots(
        len(panels), 1, sharex=True, squeeze=False, figsize=size, layout="constrained"
    )
    for ax, (title, key, limit) in zip(axes[:, 0], panels, strict=True):
        for i, curve in enumerate(view.curves):
            colour = COLOURS[i % len(COLOURS)]
            ys = _ys(curve, key)
            ax.plot(curve.rates, ys, "-", color=colour, label=curve.label)
            for x, y, met in zip(curve.rates, ys, curve.met, strict=True):
                ax.plot([x], [y], "o", color=colour, markerfacecolor=colour if met else "white")
            if curve.capacity is not None:
                ax.axvline(curve.capacity, color=colour, linestyle=":")
        if limit is not None:
            ax.axhline(limit, color="#d62728", linestyle="--", label=f"SLO {limit:g} ms")
        ax.set_ylabel(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("offered request rate (requests/s)")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Capacity: throughput and SLO percentiles against request rate")
    return fig
