"""Study report: one self-contained HTML page (plotly, inline JS) with the trials, throughput
against each tuned parameter, the optimization history, parameter importances and, for
multi-objective studies, the Pareto front. Read-only; plotly is imported lazily."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import UserError
from autotune.report.capacity_plot import capacity_view
from autotune.report.capacity_plot import html_figure as capacity_html
from autotune.report.data import (
    MISSING,
    Param,
    Point,
    best_so_far,
    chosen,
    importances,
    points,
    tick,
    tuned_params,
)
from autotune.search import study as st
from autotune.search import study_keys as keys


def _e(value: object) -> str:
    return html.escape(str(value))


def _header(study: optuna.Study, pts: list[Point]) -> str:
    m, hw, wl = (study.user_attrs.get(k) or {} for k in (keys.MODEL, keys.HARDWARE, keys.WORKLOAD))
    n = {k: sum(p.kind == k for p in pts) for k in ("feasible", "infeasible", "failed")}
    n["skipped"] = sum(p.outcome == "skipped" for p in pts)
    best = next((p for p in pts if p.number == chosen(study)), None)
    tput = f", {best.throughput:.1f} output tokens/s" if best and best.throughput else ""
    facts = {
        "model": f"{m.get('id', '?')} ({m.get('architecture')}, {m.get('dtype')}, "
        f"max_position_embeddings {m.get('max_position_embeddings')})",
        "hardware": f"{hw.get('gpu', '?')} {hw.get('memory_gib', '?')} GiB "
        f"x{hw.get('count', 1)} ({hw.get('key', '?')})",
        "workload": f"{wl.get('signature', '?')}: input {wl.get('input_len')}, output "
        f"{wl.get('output_len')} tokens, {wl.get('num_prompts')} prompts",
        "search space": study.user_attrs.get(keys.SPACE, "?"),
        "objectives": ", ".join(d.name.lower() for d in study.directions),
        "trials": f"{len(pts)} trials, {st.launches(study)} launches: {n['feasible']} feasible, "
        f"{n['infeasible']} infeasible ({n['skipped']} not launched), {n['failed']} failed",
        "chosen": "none" if best is None else f"trial {best.number}{tput}",
    }
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts.items())
    return f"<h1>autotune study report</h1><h2>{_e(study.study_name)}</h2><table>{rows}</table>"


def _table(study: optuna.Study, pts: list[Point]) -> str:
    number = chosen(study)
    cols = "# state outcome source vLLM_args output_tok/s TTFT_p95_ms TPOT_p95_ms KV_tokens reason"
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols.split())
    body = []
    for row, p in zip(st.trial_rows(study.get_trials(deepcopy=False)), pts, strict=True):
        nums = [row.throughput, row.ttft_p95_ms, row.tpot_p95_ms]
        reason = p.reason if p.kind != "feasible" else ""
        cells = [
            f"{p.number} &#9733; chosen" if p.number == number else str(p.number),
            _e(row.state), f'<span class="{p.kind}">{_e(p.outcome)}</span>', _e(row.source),
            "<br>".join(f"{_e(k)}={_e(v)}" for k, v in row.args.items()),
            *("" if v is None else f"{v:.1f}" for v in nums),
            "" if row.kv_cache_tokens is None else f"{row.kv_cache_tokens:,}",
            f'<span title="{_e(reason)}">{_e(reason[:160])}{"..." * (len(reason) > 160)}</span>',
        ]  # fmt: skip
        cls = ' class="chosen"' if p.number == number else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="trials"><tr>{head}</tr>{"".join(body)}</table>'


def _dots(go: Any, sel: list[Point], x: list[Any], y: list[Any], name: str, **marker: Any) -> Any:
    """A marker trace; hovering shows the trial, its class and reason."""
    text = [f"trial {p.number}: {_e(p.outcome)}<br>{_e(p.reason[:120])}" for p in sel]
    return go.Scatter(x=x, y=y, mode="markers", name=name, legendgroup=name, marker=marker,
                      text=text, hovertemplate="%{text}<br>x=%{x}<extra></extra>")  # fmt: skip


STAR = {"symbol": "star", "color": "gold", "size": 18, "line": {"width": 1, "color": "black"}}
KINDS = {"infeasible": "#d62728", "failed": "#7f7f7f"}
CSS = (
    "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top;"
    "text-align:left}tr.chosen{background:#fff3b0;font-weight:bold}.infeasible{color:#c00}"
    ".failed{color:#777}.feasible{color:#060}.note{color:#555;font-style:italic}"
)


def _params_figure(go: Any, pts: list[Point], params: list[Param], number: int | None) -> Any:
    """Throughput against each parameter; below each, a band of failure classes."""
    from plotly.subplots import make_subplots

    ncols = min(2, len(params))
    nrows = -(-len(params) // ncols)
    fig = make_subplots(rows=2 * nrows, cols=ncols, vertical_spacing=0, horizontal_spacing=0.2)
    bad = [p for p in pts if p.kind in KINDS]
    classes = sorted({p.outcome for p in bad}, key=lambda c: sum(p.outcome == c for p in bad))
    for i, par in enumerate(params):
        row, col = 2 * (i // ncols) + 1, i % ncols + 1
        have = [p for p in pts if par.name in p.params]
        good = [p for p in have if p.throughput is not None]
        traces = [(row, good, "feasible", {"color": "#1f77b4", "size": 9}),
                  (row, [p for p in good if p.number == number], "chosen trial", STAR)]  # fmt: skip
        traces += [(row + 1, [p for p in have if p.kind == k], k, {"symbol": "x", "color": c,
                   "size": 10}) for k, c in KINDS.items()]  # fmt: skip
        for r, sel, name, marker in traces:
            ys = [p.throughput if r == row else p.outcome for p in sel]
            trace = _dots(go, sel, [p.params[par.name] for p in sel], ys, name, **marker)
            fig.add_trace(trace.update(showlegend=i == 0 and bool(sel)), row=r, col=col)
        anchor = "x" + fig.get_subplot(row, col).xaxis.plotly_name[5:]
        axis: dict[str, Any] = {"type": "linear"}
        if par.log:  # ticks at powers of two
            ticks = [2.0**k for k in range(-20, 64) if par.low <= 2.0**k <= par.high]
            axis = {"type": "log", "tickvals": ticks, "ticktext": [tick(v) for v in ticks]}
        y0, b = 1 - (i // ncols + 1) / nrows, 1 / nrows  # this row of panels: [y0, y0 + b]
        fig.update_xaxes(showticklabels=False, row=row, col=col, **axis)
        fig.update_xaxes(matches=anchor, title_text=par.label, row=row + 1, col=col, **axis)
        fig.update_yaxes(title_text="output tokens/s", rangemode="tozero", row=row, col=col,
                         domain=[y0 + 0.42 * b, y0 + 0.95 * b])  # fmt: skip
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=classes,
                         range=[-0.6, len(classes) - 0.4], showticklabels=col == 1,
                         domain=[y0 + 0.17 * b, y0 + 0.4 * b], row=row + 1, col=col)  # fmt: skip
    fig.update_layout(height=520 * nrows, title="Output tokens/s against each tuned parameter "
                      "(infeasible trials: the band below)")  # fmt: skip
    return fig


def _history_figure(go: Any, study: optuna.Study, pts: list[Point], number: int | None) -> Any:
    """Throughput per trial (infeasible ones at 0) and the best so far."""
    good = [p for p in pts if p.throughput is not None]
    line = best_so_far(pts, maximize=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    best = go.Scatter(x=[n for n, _ in line], y=[v for _, v in line], mode="lines",
                      line_shape="hv", name="best so far", line_color="#2ca02c")  # fmt: skip
    fig = go.Figure(best)
    star = [p for p in good if p.number == number]
    fig.add_trace(_dots(go, good, [p.number for p in good], [p.throughput for p in good],
                        "feasible", color="#1f77b4", size=9))  # fmt: skip
    for name, colour in KINDS.items():
        sel = [p for p in pts if p.kind == name]
        fig.add_trace(_dots(go, sel, [p.number for p in sel], [0] * len(sel), f"{name} (at 0)",
                            symbol="x", color=colour, size=10))  # fmt: skip
    fig.add_trace(_dots(go, star, [p.number for p in star], [p.throughput for p in star],
                        "chosen trial", **STAR))  # fmt: skip
    fig.update_layout(title="Optimization history", height=440, xaxis_title="trial number",
                      yaxis_title="output tokens/s")  # fmt: skip
    return fig


def write_report(*, study: optuna.Study, out: Path, png: bool) -> list[Path]:
    """Write the HTML report (and with ``png`` the static images); the paths written."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UserError(MISSING) from None
    pts, params, number = points(study), tuned_params(study), chosen(study)
    sections = [_header(study, pts), "<h2>Trials</h2>", _table(study, pts)]
    figures: list[tuple[str, Any]] = []
    if params and pts:
        figures.append(("Throughput against each tuned parameter",
                        _params_figure(go, pts, params, number)))  # fmt: skip
    figures.append(("Optimization history", _history_figure(go, study, pts, number)))
    imp = importances(study)
    if imp.values:
        found = imp.values
        names = sorted(found, key=found.__getitem__)
        bars = go.Figure(go.Bar(x=[found[n] for n in names], y=names, orientation="h",
                                text=[f"{found[n]:.2f}" for n in names]))  # fmt: skip
        bars.update_layout(title=imp.title, height=160 + 50 * len(names),
                           xaxis_title=f"importance ({imp.note})")  # fmt: skip
        figures.append(("Parameter importances", bars))
    if len(study.directions) > 1:
        figures.append(("Pareto front", optuna.visualization.plot_pareto_front(study)))
    if (view := capacity_view(study)) is not None:
        figures.append(("Capacity against request rate", capacity_html(go, view)))
    for i, (title, fig) in enumerate(figures):
        fig.update_layout(template="plotly_white")
        div = fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False},
                          default_height=f"{int(fig.layout.height or 450)}px")  # fmt: skip
        sections += [f"<h2>{_e(title)}</h2>", div]
    if not imp.values:
        sections.append(f"<h2>Parameter importances</h2><p class=note>{_e(imp.note)}</p>")
    if len(study.directions) == 1:
        sections.append("<h2>Trade-offs</h2><p class=note>single objective: no Pareto front</p>")
    out.parent.mkdir(parents=True, exist_ok=True)
    page = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(study.study_name)}"
    page += f"</title><style>{CSS}</style></head><body>\n" + "\n".join(sections)
    out.write_text(page + "\n</body></html>\n", encoding="utf-8")
    if not png:
        return [out]
    from autotune.report.png import write_pngs  # matplotlib only when asked

    return [out, *write_pngs(study=study, stem=out.with_suffix(""))]
