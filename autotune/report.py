"""Study report: one self-contained HTML page (plotly, inline JS) with the trials, throughput
against each tuned parameter, the optimization history, parameter importances and, for
multi-objective studies, the Pareto front. Read-only; plotly is imported lazily."""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autotune import study as st
from autotune.errors import UserError

MISSING = "autotune report needs plotly and matplotlib: pip install 'vllm-autotune[report]'"
TPUT = "output throughput (output tokens/s)"
MIN_FEASIBLE = 3  # fewer feasible trials: no parameter importances
LOG_SPAN = 20.0  # a parameter whose range spans more than this is drawn on a log axis
UNITS = {
    "gpu_memory_utilization": "fraction of GPU memory",
    "kv_cache_memory_bytes": "bytes",
    "max_num_seqs": "sequences",
    "max_num_batched_tokens": "tokens per step",
    "max_model_len": "tokens",
    "image_limit": "images per prompt",
}


@dataclass(frozen=True)
class Point:
    """One trial as the charts see it."""

    number: int
    kind: str  # feasible | infeasible | failed | pending
    outcome: str  # "ok" or the failure class
    throughput: float | None
    params: dict[str, float]
    reason: str


@dataclass(frozen=True)
class Param:
    """A tuned parameter (its range is wider than one value)."""

    name: str
    low: float
    high: float
    log: bool

    @property
    def label(self) -> str:
        unit = UNITS.get(self.name)
        return f"{self.name} ({unit})" if unit else self.name


def default_output() -> Path:
    """``autotune-report.html`` in the current directory."""
    return Path("autotune-report.html")


def points(study: optuna.Study) -> list[Point]:
    """Every trial: feasible ones with their throughput, the others with their class."""
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        outcome = str(attrs.get("outcome") or "")
        if t.state == TrialState.COMPLETE:
            violated = any(v > 0 for v in t.constraints.values())
            kind = "infeasible" if violated or outcome not in ("", "ok") else "feasible"
        else:
            kind = "failed" if t.state == TrialState.FAIL else "pending"
        outcome = outcome or ("ok" if kind == "feasible" else t.state.name.lower())
        tput = (attrs.get("metrics") or {}).get("output_throughput")
        if tput is None and kind == "feasible" and t.values:
            tput = t.values[0]
        params = {k: float(v) for k, v in t.params.items() if isinstance(v, (int, float))}
        reason = str(attrs.get("reason") or "")
        if outcome == "kv_too_small" and attrs.get("estimated_max_model_len"):
            reason = f"KV cache fits max_model_len <= {attrs['estimated_max_model_len']}; {reason}"
        out.append(
            Point(t.number, kind, outcome, tput if kind == "feasible" else None, params, reason)
        )
    return out


def tuned_params(study: optuna.Study) -> list[Param]:
    """Numeric parameters whose range (over all trials) is wider than one value."""
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if isinstance(dist, (IntDistribution, FloatDistribution)):
                lows[name] = min(lows.get(name, dist.low), dist.low)
                highs[name] = max(highs.get(name, dist.high), dist.high)
    return [
        Param(n, lows[n], highs[n], lows[n] > 0 and highs[n] / lows[n] > LOG_SPAN)
        for n in lows
        if highs[n] > lows[n]
    ]


def best_so_far(pts: list[Point], *, maximize: bool = True) -> list[tuple[int, float]]:
    """The best feasible throughput after each feasible trial."""
    line: list[tuple[int, float]] = []
    for p in pts:
        if p.throughput is None:
            continue
        best = line[-1][1] if line else p.throughput
        line.append((p.number, max(best, p.throughput) if maximize else min(best, p.throughput)))
    return line


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances (Optuna's default; fANOVA would need scikit-learn) over the
    feasible trials, or ``({}, why not)``."""
    feasible = [p.number for p in points(study) if p.kind == "feasible"]
    if len(feasible) < MIN_FEASIBLE:
        return {}, f"parameter importances need {MIN_FEASIBLE} feasible trials ({len(feasible)})"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    only = optuna.create_study(directions=study.directions)
    only.add_trials([study.trials[n] for n in feasible])
    multi = len(study.directions) > 1
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    try:
        with warnings.catch_warnings():  # PED-ANOVA warns on any target; ours is signed
            warnings.simplefilter("ignore", UserWarning)
            found = optuna.importance.get_param_importances(
                only,
                evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=(lambda t: sign * t.values[0]) if multi else None,
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, f"parameter importances unavailable: {exc}"
    return dict(found), ""


def chosen(study: optuna.Study) -> int | None:
    number = study.user_attrs.get("chosen_trial")
    return number if isinstance(number, int) else None


def short_name(study: optuna.Study) -> str:
    """model@hardware@workload@objective (without the space hash)."""
    return "@".join(study.study_name.split("@")[:4])


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UserError(MISSING) from None
    return go


def _e(value: object) -> str:
    return html.escape(str(value))


def _header(study: optuna.Study, pts: list[Point]) -> str:
    ua = study.user_attrs
    model, hw, wl = ua.get("model") or {}, ua.get("hardware") or {}, ua.get("workload") or {}
    count = {k: sum(p.kind == k for p in pts) for k in ("feasible", "infeasible", "failed")}
    skipped = sum(p.outcome == "skipped" for p in pts)
    number = chosen(study)
    best = next((p for p in pts if p.number == number), None)
    facts = [
        ("model", f"{model.get('id', '?')} ({model.get('architecture')}, {model.get('dtype')}, "
                  f"max_position_embeddings {model.get('max_position_embeddings')})"),
        ("hardware", f"{hw.get('gpu', '?')} {hw.get('memory_gib', '?')} GiB x{hw.get('count', 1)}"
                     f" ({hw.get('key', '?')})"),
        ("workload", f"{wl.get('signature', '?')}: input {wl.get('input_len')}, output "
                     f"{wl.get('output_len')} tokens, {wl.get('num_prompts')} prompts"),
        ("search space", ua.get("space", "?")),
        ("objectives", ", ".join(d.name.lower() for d in study.directions)),
        ("trials", f"{len(pts)} trials, {st.launches(study)} launches: {count['feasible']} "
                   f"feasible, {count['infeasible']} infeasible ({skipped} skipped without "
                   f"launch), {count['failed']} failed"),
        ("chosen", "none" if best is None else f"trial {best.number}"
                   + (f", {best.throughput:.1f} output tokens/s" if best.throughput else "")),
    ]  # fmt: skip
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return f"<h1>autotune study report</h1><h2>{_e(study.study_name)}</h2><table>{rows}</table>"


def _table(study: optuna.Study, pts: list[Point]) -> str:
    number = chosen(study)
    cols = ("#", "state", "outcome", "source", "vLLM args", "output tok/s", "TTFT p95 ms",
            "TPOT p95 ms", "KV tokens", "reason")  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for row, p in zip(st.trial_rows(study.get_trials(deepcopy=False)), pts, strict=True):
        args = "<br>".join(f"{_e(k)}={_e(v)}" for k, v in row["args"].items())
        nums = [row["throughput"], row["ttft_p95_ms"], row["tpot_p95_ms"]]
        cells = [
            f"{p.number} &#9733; chosen" if p.number == number else str(p.number),
            _e(row["state"]),
            f'<span class="{p.kind}">{_e(p.outcome)}</span>',
            _e(row["source"]),
            args,
            *("" if v is None else f"{v:.1f}" for v in nums),
            "" if row["kv_cache_tokens"] is None else f"{row['kv_cache_tokens']:,}",
            ""
            if p.kind == "feasible"
            else f'<span title="{_e(p.reason)}">{_e(p.reason[:160])}'
            f"{'...' if len(p.reason) > 160 else ''}</span>",
        ]
        cls = ' class="chosen"' if p.number == number else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="trials"><tr>{head}</tr>{"".join(body)}</table>'


def _params_figure(go: Any, pts: list[Point], params: list[Param], number: int | None) -> Any:
    from plotly.subplots import make_subplots

    ncols = min(2, len(params))
    nrows = -(-len(params) // ncols)
    heights = [0.78 / nrows, 0.22 / nrows] * nrows
    fig = make_subplots(rows=2 * nrows, cols=ncols, row_heights=heights, vertical_spacing=0.02,
                        horizontal_spacing=0.14)  # fmt: skip
    bad = [p for p in pts if p.kind in ("infeasible", "failed")]
    classes = sorted({p.outcome for p in bad}, key=lambda c: -sum(p.outcome == c for p in bad))
    for i, par in enumerate(params):
        row, col = 2 * (i // ncols) + 1, i % ncols + 1
        have = [p for p in pts if par.name in p.params]
        good = [p for p in have if p.throughput is not None]
        star = [p for p in good if p.number == number]
        groups = [("feasible", good, "circle", "#1f77b4", 9, row),
                  ("chosen trial", star, "star", "gold", 18, row)]  # fmt: skip
        for kind, colour in (("infeasible", "#d62728"), ("failed", "#7f7f7f")):
            groups.append((kind, [p for p in have if p.kind == kind], "x", colour, 10, row + 1))
        for name, sel, symbol, colour, size, r in groups:
            fig.add_trace(go.Scatter(
                x=[p.params[par.name] for p in sel],
                y=[p.throughput if r == row else p.outcome for p in sel],
                mode="markers", name=name, legendgroup=name, showlegend=i == 0 and bool(sel),
                marker={"symbol": symbol, "color": colour, "size": size,
                        "line": {"width": 1, "color": "black"} if symbol == "star" else None},
                text=[f"trial {p.number}: {p.outcome}<br>{_e(p.reason[:120])}" for p in sel],
                hovertemplate=f"%{{text}}<br>{par.name}=%{{x}}<extra></extra>",
            ), row=r, col=col)  # fmt: skip
        top = fig.get_subplot(row, col)
        fig.update_xaxes(
            showticklabels=False, type="log" if par.log else "linear", row=row, col=col
        )
        fig.update_xaxes(title_text=par.label, type="log" if par.log else "linear",
                         matches="x" + top.xaxis.plotly_name[5:], row=row + 1, col=col)  # fmt: skip
        fig.update_yaxes(title_text="output tokens/s", rangemode="tozero", row=row, col=col)
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=classes[::-1],
                         showticklabels=col == 1, row=row + 1, col=col)  # fmt: skip
    fig.update_layout(title=f"{TPUT} against each tuned parameter; infeasible trials in the "
                      "band below, by failure class", height=470 * nrows)  # fmt: skip
    return fig


def _history_figure(go: Any, study: optuna.Study, pts: list[Point], number: int | None) -> Any:
    fig = go.Figure()
    good = [p for p in pts if p.throughput is not None]
    bad = [p for p in pts if p.kind in ("infeasible", "failed")]
    line = best_so_far(pts, maximize=study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    fig.add_trace(
        go.Scatter(
            x=[n for n, _ in line],
            y=[v for _, v in line],
            mode="lines",
            line_shape="hv",
            name="best so far",
            line={"color": "#2ca02c"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p.number for p in good],
            y=[p.throughput for p in good],
            mode="markers",
            name="feasible",
            marker={"color": "#1f77b4"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p.number for p in bad],
            y=[0] * len(bad),
            mode="markers",
            name="infeasible / failed (at 0)",
            text=[p.outcome for p in bad],
            marker={"symbol": "x", "color": "#d62728", "size": 9},
        )
    )
    star = [p for p in good if p.number == number]
    fig.add_trace(
        go.Scatter(
            x=[p.number for p in star],
            y=[p.throughput for p in star],
            mode="markers",
            name="chosen trial",
            marker={"symbol": "star", "color": "gold", "size": 18},
        )
    )
    fig.update_layout(title="Optimization history", height=420, xaxis_title="trial number",
                      yaxis_title="output tokens/s")  # fmt: skip
    return fig


def write_report(*, study: optuna.Study, out: Path, png: bool) -> list[Path]:
    """Write the HTML report (and with ``png`` the static images); the paths written."""
    go = _plotly()
    pts, params, number = points(study), tuned_params(study), chosen(study)
    figures: list[tuple[str, Any]] = []
    sections: list[str] = [_header(study, pts), "<h2>Trials</h2>", _table(study, pts)]
    if params and pts:
        figures.append(("Throughput against each tuned parameter",
                        _params_figure(go, pts, params, number)))  # fmt: skip
    figures.append(("Optimization history", _history_figure(go, study, pts, number)))
    found, why = importances(study)
    if found:
        names = sorted(found, key=found.__getitem__)
        bars = go.Figure(go.Bar(x=[found[n] for n in names], y=names, orientation="h",
                                text=[f"{found[n]:.2f}" for n in names]))  # fmt: skip
        bars.update_layout(title="Parameter importances (PED-ANOVA over feasible trials)",
                           height=140 + 50 * len(names), xaxis_title="importance")  # fmt: skip
        figures.append(("Parameter importances", bars))
    if len(study.directions) > 1:
        front = optuna.visualization.plot_pareto_front(study)  # reads the trials' constraints
        figures.append(("Pareto front", front))
    for i, (title, fig) in enumerate(figures):
        fig.update_layout(template="plotly_white", margin={"l": 170})
        height = int(fig.layout.height or 450)
        div = fig.to_html(full_html=False, include_plotlyjs=i == 0, default_height=f"{height}px",
                          config={"displaylogo": False})  # fmt: skip
        sections += [f"<h2>{_e(title)}</h2>", div]
        if title == "Optimization history" and why:
            sections.append(f"<h2>Parameter importances</h2><p class=note>{_e(why)}</p>")
    if len(study.directions) == 1:
        sections.append("<p class=note>single objective: no Pareto front</p>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(study.study_name, "\n".join(sections)), encoding="utf-8")
    written = [out]
    if png:
        from autotune.report_png import write_pngs

        written += write_pngs(study=study, stem=out.with_suffix(""))
    return written


def _page(title: str, body: str) -> str:
    css = (
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top;"
        "text-align:left}tr.chosen{background:#fff3b0;font-weight:bold}.infeasible{color:#c00}"
        ".failed{color:#777}.feasible{color:#060}.note{color:#555;font-style:italic}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{css}</style></head><body>\n{body}\n</body></html>\n"
    )
