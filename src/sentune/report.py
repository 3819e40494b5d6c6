"""Draw a run's analysis: one self-contained HTML report (Plotly, no CDN) and a terminal summary.

Everything drawn here is computed by `analysis.py`; this module only turns that data into
panels (figures, tables and text) and lays them out. Screenshots and render checks of the
report are `browser.py`'s job.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis import RANKING_RULE, FloorVerdict, RunAnalysis, format_mean_std
from sentune.errors import SentuneError

log = logging.getLogger(__name__)

REPORT = "report.html"
#: Colour of each trial status, the same in every panel that colours by status.
STATUS_COLORS = {
    "completed": "#1f77b4",
    "stopped": "#ff7f0e",
    "unfinished": "#7f7f7f",
    "error": "#d62728",
}
#: Marker of each trial status where colour marks the trial (learning curves).
STATUS_SYMBOLS = {
    "completed": "circle",
    "stopped": "x",
    "unfinished": "circle-open",
    "error": "triangle-up",
}
FLOOR_COLOR = "#2ca02c"
#: Number format (d3) of parameter values and scores on axes: 3 significant digits, no
#: trailing zeros (0.42, not 0.420000 or 0.675954).
NUMBER_FORMAT = ".3~g"


class Panel(NamedTuple):
    """One section of the report: a title, a caption, and what it shows."""

    #: The section's anchor (`#id`) and the prefix of its figures' div ids (`fig-<id>-<i>`).
    id: str
    title: str
    caption: str
    #: Why something is missing or what to keep in mind (shown highlighted; "" for none).
    note: str = ""
    #: Plotly figures, drawn in order.
    figures: tuple = ()
    #: HTML fragments (tables) after the figures.
    html: tuple[str, ...] = ()


class _Plotly(NamedTuple):
    go: Any
    pio: Any
    make_subplots: Any


def _plotly() -> _Plotly:
    """Plotly's modules, or a one-line error that says what to install."""
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.subplots import make_subplots
    except ImportError:
        raise SentuneError(
            "the report needs plotly: pip install plotly (or reinstall sentune)"
        ) from None
    return _Plotly(go, pio, make_subplots)


def write_report(result: RunAnalysis, out_dir: str | Path) -> Path:
    """Write `<out_dir>/report.html`: a table of contents, then every panel of the run,
    plotly.js embedded once.

    Args:
        result: `analysis.analyze(run_dir)`.
        out_dir: `analysis/<run>`.

    Returns:
        The path of the report.
    """
    plotly = _plotly()
    panels = build_panels(result)
    body, first = [], True
    for panel in panels:
        parts = [f'<section id="{panel.id}"><h2>{html.escape(panel.title)}</h2>']
        parts.append(f'<p class="caption">{html.escape(panel.caption)}</p>')
        if panel.note:
            parts.append(f'<p class="note">{html.escape(panel.note)}</p>')
        for i, fig in enumerate(panel.figures):
            fig.update_layout(template="plotly_white", margin={"t": 40, "l": 60, "r": 30})
            parts.append(
                plotly.pio.to_html(
                    fig,
                    full_html=False,
                    include_plotlyjs=first,
                    div_id=f"fig-{panel.id}-{i}",
                    config={"displaylogo": False, "responsive": True},
                )
            )
            first = False
        parts.extend(panel.html)
        parts.append("</section>")
        body.append("\n".join(parts))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(_page(result, _contents(panels) + "\n".join(body)), encoding="utf-8")
    tmp.replace(path)
    return path


def build_panels(result: RunAnalysis) -> list[Panel]:
    """Every panel of the report, in order (one builder per panel).

    Args:
        result: `analysis.analyze(run_dir)`.

    Returns:
        The panels; one whose data is missing carries a note saying why instead of a figure.
    """
    plotly = _plotly()
    return [build(result, plotly) for build in _PANELS]


def _contents(panels: list[Panel]) -> str:
    """The table of contents: one anchor per panel."""
    links = " ".join(f'<a href="#{p.id}">{html.escape(p.title)}</a>' for p in panels)
    return f"<nav class='toc'><b>Contents:</b> {links}</nav>\n"


def _compute_line(result: RunAnalysis) -> str:
    trials_s, wall_s = result.compute
    if np.isnan(trials_s):
        return "Compute time: not recorded."
    return (
        f"Compute: {_duration(trials_s)} of trial time in {_duration(wall_s)} of wall time "
        "(first trial start to last report)."
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1300px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin:28px 0 2px;
border-bottom:1px solid #ddd;padding-bottom:4px}
.caption{color:#555;margin:2px 0 8px}.note{color:#8a6d00;background:#fff8e1;padding:6px 10px}
.lead{font-size:1.05em}table{border-collapse:collapse;font-size:0.85em;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.floor td{background:#eaf6ea;font-style:italic}
.tables{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
nav.toc{background:#f7f7f7;padding:6px 12px;margin:10px 0;line-height:1.8}
nav.toc a{margin-right:14px;white-space:nowrap}
"""


def _page(result: RunAnalysis, body: str) -> str:
    manifest = result.run.manifest
    title = f"sentune report: {manifest.run}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='lead'>{html.escape(_headline(result))} "
        f"{html.escape(_compute_line(result))}</p>"
        f"<p class='caption'>{html.escape(manifest.space.description)}</p>"
        f"{body}</body></html>\n"
    )


def _headline(result: RunAnalysis) -> str:
    table = result.table
    counts = table["status"].value_counts()
    parts = [f"{len(table)} trials"] + [
        f"{counts[s]} {s}" for s in ("completed", "stopped", "unfinished", "error") if s in counts
    ]
    text = ", ".join(parts) + "."
    if result.verdict is not None:
        text = f"{_verdict_line(result.verdict)} {text}"
    scored = table.dropna(subset=[config.OBJECTIVE])
    if len(scored):
        best = scored.iloc[0]
        text += f" Best {config.OBJECTIVE} {best[config.OBJECTIVE]:.4f} (trial {best['trial_id']})"
        if result.floor is not None:
            gap = best[config.OBJECTIVE] - result.floor.val_macro_f1
            text += f"; TF-IDF floor {result.floor.val_macro_f1:.4f} ({gap:+.4f})"
        text += "."
    return text


def _verdict_line(verdict: FloorVerdict) -> str:
    """One sentence: the floor beats (or ties with) the best trial, and the likely causes."""
    reasons = {
        "truncation": f"truncation (max_length {verdict.max_length} cuts "
        f"{verdict.truncated_share:.1%} of the training texts; "
        + (
            "the model takes no more, so keep both ends with train.truncation: head_tail)"
            if verdict.model_limit is not None and verdict.max_length >= verdict.model_limit
            else "try train.max_length: auto or train.truncation: head_tail)"
        ),
        "too few epochs": (
            f"too few epochs (still improving at its last epoch, {verdict.epochs:g} of "
            f"{verdict.max_epochs}; raise budget.max_epochs)"
            if verdict.epochs >= verdict.max_epochs
            else f"too few epochs (still improving when it stopped at epoch {verdict.epochs:g} "
            f"of {verdict.max_epochs})"
        ),
        "too little data": f"too little data ({verdict.train_size} training examples; "
        "TF-IDF needs fewer than fine-tuning)",
    }
    beats = "beats" if verdict.floor > verdict.best else "ties with"
    line = (
        f"The TF-IDF floor ({verdict.floor:.4f}) {beats} the best trial ({verdict.best:.4f}, "
        f"trial {verdict.trial_id})"
    )
    if not verdict.causes:
        return f"{line}; truncation, epochs and data size look fine: check the learning rate."
    plural = "s" if len(verdict.causes) > 1 else ""
    return f"{line}; likely cause{plural}: {'; '.join(reasons[c] for c in verdict.causes)}."


def _table_html(
    frame: pd.DataFrame, *, floats: str = "{:.4g}", row_classes: dict[int, str] | None = None
) -> str:
    """An HTML table of `frame` (escaped); `row_classes` maps a row position to a CSS class."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        if isinstance(value, float | np.floating):
            return floats.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cls = (row_classes or {}).get(i)
        attr = f' class="{cls}"' if cls else ""
        cells = "".join(
            f'<td class="num">{cell(v)}</td>'
            if isinstance(v, int | float | np.number) and not isinstance(v, bool)
            else f"<td>{cell(v)}</td>"
            for v in values
        )
        rows.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _floor_note(result: RunAnalysis) -> str:
    if result.floor is None:
        return f"TF-IDF floor: {result.notes.get('floor', 'not computed')}"
    floor = result.floor
    note = (
        f"TF-IDF floor: {floor.method}, trained on the same {floor.train_size} training examples "
        f"and scored on the same {floor.val_size} validation examples."
    )
    if not floor.fingerprint_matches:
        note += " WARNING: the rebuilt data differs from the data the search saw."
    return note


def _panel_leaderboard(result: RunAnalysis, plotly: _Plotly) -> Panel:
    go = plotly.go
    board = result.board
    table_html = _table_html(
        board.table, row_classes={board.floor_row: "floor"} if board.floor_row is not None else None
    )
    scored = result.table.dropna(subset=[config.OBJECTIVE])
    # Dots rather than bars: the differences that matter are small against the axis's zero.
    fig = go.Figure(
        go.Scatter(
            x=scored["trial_id"],
            y=scored[config.OBJECTIVE],
            mode="markers",
            marker={"color": [STATUS_COLORS.get(s, "#999") for s in scored["status"]], "size": 12},
            text=scored["status"],
            hovertemplate="trial %{x}<br>%{y:.4f}<br>%{text}<extra></extra>",
            showlegend=False,
        )
    )
    if result.floor is not None:
        _floor_line(fig, plotly, result.floor.val_macro_f1)
    fig.update_layout(
        height=340,
        xaxis_title="trial (best first)",
        yaxis_title=f"{config.OBJECTIVE} (best epoch)",
        xaxis_type="category",
    )
    return Panel(
        id="leaderboard",
        title="Leaderboard",
        caption=f"Each trial scored by its best epoch's validation macro-F1. {RANKING_RULE} Dot "
        "colour is the trial's status (blue completed, orange stopped by ASHA, grey unfinished, "
        "red failed); the dashed green line is the TF-IDF floor.",
        note=_floor_note(result),
        figures=(fig,),
        html=(table_html,),
    )


def _panel_confirmation(result: RunAnalysis, plotly: _Plotly) -> Panel:
    budget = result.run.manifest.budget
    panel = Panel(
        id="confirmation",
        title="Confirmation over seeds",
        caption=f"The top {config.confirm_top(budget)} configurations of the leaderboard "
        f"retrained to the full {budget.max_epochs} epochs with {budget.confirm_seeds} seeds "
        "(a trial that trained the full budget counts as its own seed): one dot per seed, the "
        "bar is the mean ± std. The winner is the best mean; seeds move small-data "
        "fine-tuning by whole points (Dodge et al. 2020).",
    )
    confirmed = result.confirmation
    if confirmed is None:
        why = result.notes.get("confirmation") or (
            "confirmation is off (budget.confirm_seeds 0)"
            if budget.confirm_seeds == 0
            else "no confirmation trials in this run (an older run, or the search did not finish)"
        )
        return panel._replace(note=why)
    go, table = plotly.go, confirmed.table
    order = [t for t in confirmed.configs["trial_id"] if t in set(table["trial_id"])]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=table["trial_id"],
            y=table[config.OBJECTIVE],
            mode="markers",
            marker={"size": 10, "color": STATUS_COLORS["completed"], "opacity": 0.7},
            text=[f"seed {s}" for s in table["seed"]],
            hovertemplate="trial %{x}, %{text}<br>%{y:.4f}<extra></extra>",
            name="seed",
        )
    )
    stats = confirmed.configs.set_index("trial_id").loc[order]
    fig.add_trace(
        go.Scatter(
            x=order,
            y=stats["mean"],
            error_y={"type": "data", "array": stats["std"].fillna(0.0)},
            mode="markers",
            marker={"size": 16, "symbol": "line-ew-open", "color": "black"},
            hovertemplate="trial %{x}<br>mean %{y:.4f}<extra></extra>",
            name="mean ± std",
        )
    )
    if result.floor is not None:
        _floor_line(fig, plotly, result.floor.val_macro_f1)
    fig.update_layout(
        height=340,
        xaxis={"title": "configuration (its search trial; best mean first)", "type": "category",
               "categoryorder": "array", "categoryarray": order},
        yaxis_title=f"{config.OBJECTIVE} (best epoch)",
    )  # fmt: skip
    shown = confirmed.configs.copy()
    shown["mean ± std"] = [
        format_mean_std(table.loc[table["trial_id"] == t, config.OBJECTIVE].tolist()) if n else ""
        for t, n in zip(shown["trial_id"], shown["n_seeds"], strict=True)
    ]
    return panel._replace(
        note=_confirmed_winner_line(result),
        figures=(fig,),
        html=(_table_html(shown.drop(columns=["mean", "std"])),),
    )


def _panel_latency(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="latency",
        title="Macro-F1 against latency",
        caption=f"Each trial's {config.OBJECTIVE} (best epoch, as in the leaderboard) against its "
        "p95 latency at batch 1 (measured once per trial, the way it is served: ONNX or int8 "
        "ONNX on the CPU, PyTorch on a GPU; stopped trials too). The line joins the Pareto "
        "front (no other trial is both better and faster); the dashed line is the latency "
        "budget, the star the best trial on the front within it (what `sentune export "
        "--max-latency-ms` picks).",
    )
    front = result.pareto
    if front is None:
        why = result.notes.get("pareto") or (
            "the trials measured no latency (the space has no latency objective or bound)"
        )
        return panel._replace(note=why)
    go, table = plotly.go, front.table
    fig = go.Figure()
    for on_front, name, color in ((False, "trial", "#aaaaaa"), (True, "on the front", "#1f77b4")):
        part = table[table["on_front"] == on_front]
        fig.add_trace(
            go.Scatter(
                x=part[config.LATENCY_P95_MS],
                y=part[config.OBJECTIVE],
                mode="markers",
                name=name,
                marker={"size": 10, "color": color},
                customdata=np.stack(
                    [part["trial_id"], _hover_params(result, part["trial_id"])], axis=-1
                ),
                hovertemplate="trial %{customdata[0]}: %{y:.4f}, p95 %{x:.2f} ms"
                "<br>%{customdata[1]}<extra></extra>",
            )
        )
    line = table[table["on_front"]].sort_values(config.LATENCY_P95_MS)
    fig.add_trace(
        go.Scatter(
            x=line[config.LATENCY_P95_MS],
            y=line[config.OBJECTIVE],
            mode="lines",
            line_shape="hv",
            line={"color": "#1f77b4"},
            name="Pareto front",
        )
    )
    if front.budget_ms is not None:
        fig.add_vline(
            x=front.budget_ms,
            line_color="#d62728",
            line_dash="dash",
            annotation_text=f"budget {front.budget_ms:g} ms",
            annotation_position="top right",
        )
    note = ""
    if front.chosen is not None:
        chosen = table[table["trial_id"] == front.chosen].iloc[0]
        fig.add_trace(
            go.Scatter(
                x=[chosen[config.LATENCY_P95_MS]],
                y=[chosen[config.OBJECTIVE]],
                mode="markers",
                marker={"size": 18, "symbol": "star", "color": "#d62728"},
                name="chosen",
                hovertemplate=f"chosen: trial {front.chosen}<extra></extra>",
            )
        )
    elif front.budget_ms is not None:
        note = f"no trial on the front meets the budget of {front.budget_ms:g} ms"
    fig.update_layout(
        height=400, xaxis_title="p95 latency at batch 1 (ms)", yaxis_title=config.OBJECTIVE
    )
    shown = table.drop(columns=["checkpoint"])
    return panel._replace(note=note, figures=(fig,), html=(_table_html(shown),))


def _confirmed_winner_line(result: RunAnalysis) -> str:
    """`winner: trial X, val_macro_f1 0.7012 ± 0.0040 over 2 seeds (rank 2 of the leaderboard)`,
    or "" without a confirmation."""
    confirmed = result.confirmation
    if confirmed is None or confirmed.winner is None:
        return ""
    seeds = confirmed.table[confirmed.table["trial_id"] == confirmed.winner]
    row = confirmed.configs.set_index("trial_id").loc[confirmed.winner]
    partial = (
        f", {int(row['n_seeds'])} of {int(row['seeds_planned'])} seeds finished"
        if row["n_seeds"] < row["seeds_planned"]
        else ""
    )
    return (
        f"winner (best mean over seeds): trial {confirmed.winner}, {config.OBJECTIVE} "
        f"{format_mean_std(seeds[config.OBJECTIVE].tolist())} over {len(seeds)} seeds "
        f"({', '.join(str(s) for s in seeds['seed'])}; leaderboard rank {int(row['rank'])}"
        f"{partial})"
    )


def _floor_line(fig, plotly: _Plotly, value: float, *, row: int | None = None, col=None) -> None:
    """The floor as a dashed line, labelled in the legend (a label on the plot covers points)."""
    where = {"row": row, "col": col} if row is not None else {}
    fig.add_hline(y=value, line_dash="dash", line_color=FLOOR_COLOR, **where)
    if col in (None, 1):
        fig.add_trace(
            plotly.go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"dash": "dash", "color": FLOOR_COLOR},
                name=f"TF-IDF floor {value:.3f}",
                legendgroup="floor",
            ),
            **where,
        )


def _panel_importance(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="importance",
        title="Parameter importance (fANOVA, equal fidelity)",
        caption="Share of the score's variance each parameter explains alone, among trials "
        "compared at the same epoch (their score at that epoch, not their best); bars are the "
        "mean over forest seeds and bootstrap resamples of the trials, whiskers span the 5th to "
        "95th percentile: a whisker that reaches zero is noise.",
    )
    frame = result.importance
    if frame is None:
        return panel._replace(note=result.notes.get("importance", "not computed"))
    if frame["importance_mean"].isna().all():
        return panel._replace(note="; ".join(n for n in frame["note"].unique() if n))
    epoch, n = frame["fidelity_epoch"].iloc[0], int(frame["n_trials"].iloc[0])
    note = f"{n} trials compared at epoch {epoch:g}." + "".join(
        f" {r.param}: {r.note}." for r in frame.itertuples() if r.note
    )
    ordered = frame.iloc[::-1]
    fig = plotly.go.Figure(
        plotly.go.Bar(
            x=ordered["importance_mean"],
            y=ordered["param"],
            orientation="h",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": ordered["high"] - ordered["importance_mean"],
                "arrayminus": ordered["importance_mean"] - ordered["low"],
            },
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        height=120 + 40 * len(frame),
        xaxis_title=f"importance at epoch {epoch:g} ({n} trials)",
        xaxis_range=[0, max(1.0, float(ordered["high"].max()) * 1.05)],
    )
    table = _table_html(frame.drop(columns=["note"]), floats="{:.3f}")
    return panel._replace(note=note, figures=(fig,), html=(table,))


def _scored_values(result: RunAnalysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored trials' leaderboard rows and their parameter values as drawn, aligned."""
    mask = result.table[config.OBJECTIVE].notna()
    values = result.param_values
    if values is None:
        values = pd.DataFrame({"trial_id": result.table["trial_id"]})
    return result.table[mask].reset_index(drop=True), values[mask.to_numpy()].reset_index(drop=True)


def _categories(axis, labels: pd.Series) -> list[str]:
    """The space's choices in its order, then any observed label the space no longer has."""
    known = list(axis.categories)
    return known + [v for v in dict.fromkeys(labels) if v not in known]


def _panel_parallel(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="parallel",
        title="Parallel coordinates",
        caption="One line per scored trial through its parameter values, coloured by its "
        "best validation macro-F1 (last axis); a categorical parameter has one tick per choice, "
        "a log-uniform one a log axis.",
    )
    scored, values = _scored_values(result)
    if not len(scored):
        return panel._replace(note="no trial has been scored yet")
    dims = [
        _dimension(result.axes.get(key), values[key] if key in values else scored[key], key)
        for key in result.run.manifest.space.searched
    ]
    dims.append(
        {
            "label": config.OBJECTIVE,
            "values": scored[config.OBJECTIVE].astype(float).tolist(),
            "tickformat": NUMBER_FORMAT,
        }
    )
    fig = plotly.go.Figure(
        plotly.go.Parcoords(
            line={
                "color": scored[config.OBJECTIVE],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "F1", "tickformat": NUMBER_FORMAT},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(height=420, margin={"l": 80, "r": 80})
    return panel._replace(figures=(fig,))


def _dimension(axis, values: pd.Series, key: str) -> dict[str, Any]:
    """A parallel-coordinates axis: categorical as one tick per choice, log with ticks at the
    real values, linear with readable numbers."""
    if axis is None or axis.scale == "category":
        labels = values.map(lambda v: v if isinstance(v, str) else str(v))
        names = _categories(axis, labels) if axis is not None else sorted(set(labels))
        return {
            "label": key,
            "values": [names.index(v) for v in labels],
            "tickvals": list(range(len(names))),
            "ticktext": names,
            "range": [-0.25, len(names) - 0.75] if len(names) > 1 else [-1, 1],
        }
    numbers = values.astype(float)
    if axis.scale == "log":
        logs = np.log10(numbers)
        ticks = np.linspace(logs.min(), logs.max(), 4) if logs.max() > logs.min() else logs[:1]
        return {
            "label": f"{key} (log)",
            "values": logs.tolist(),
            "tickvals": list(ticks),
            "ticktext": [f"{10**t:.3g}" for t in ticks],
        }
    return {"label": key, "values": numbers.tolist(), "tickformat": NUMBER_FORMAT}


def _hover_params(result: RunAnalysis, trial_ids: pd.Series) -> list[str]:
    """Each trial's searched values for a hover: categorical as their choice, numbers `.3g`."""
    values = result.param_values
    if values is None:
        return [""] * len(trial_ids)
    by_trial = values.set_index("trial_id")
    out = []
    for trial_id in trial_ids:
        if trial_id not in by_trial.index:
            out.append("")
            continue
        row = by_trial.loc[trial_id]
        out.append(
            "<br>".join(
                f"{key}={v if isinstance(v, str) else format(float(v), '.3g')}"
                for key, v in row.items()
            )
        )
    return out


def _panel_history(result: RunAnalysis, plotly: _Plotly) -> Panel:
    go = plotly.go
    by_trial, by_time = result.history
    panel = Panel(
        id="history",
        title="Optimization history",
        caption="Left: each trial's best score in the order trials started, with the best so "
        "far. Right: the best score reported by any trial so far against wall-clock time since "
        "the search started. Hover a trial for its parameters.",
    )
    if not len(by_trial):
        return panel._replace(note="no trial has been scored yet")
    fig = plotly.make_subplots(rows=1, cols=2, subplot_titles=("by trial", "by wall time"))
    fig.add_trace(
        go.Scatter(
            x=by_trial["trial_index"],
            y=by_trial["value"],
            mode="markers",
            name="trial",
            customdata=np.stack(
                [by_trial["trial_id"], _hover_params(result, by_trial["trial_id"])], axis=-1
            ),
            hovertemplate="trial %{customdata[0]}: %{y:.4f}<br>%{customdata[1]}<extra></extra>",
            marker={"color": "#1f77b4"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=by_trial["trial_index"],
            y=by_trial["best_so_far"],
            mode="lines",
            line_shape="hv",
            name="best so far",
            line={"color": "#d62728"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=by_time["wall_s"] / 60,
            y=by_time["value"],
            mode="markers",
            name="evaluation",
            customdata=np.stack(
                [by_time["trial_id"], _hover_params(result, by_time["trial_id"])], axis=-1
            ),
            hovertemplate="trial %{customdata[0]}: %{y:.4f}<br>%{customdata[1]}<extra></extra>",
            marker={"color": "#aaaaaa", "size": 5},
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=by_time["wall_s"] / 60,
            y=by_time["best_so_far"],
            mode="lines",
            line_shape="hv",
            name="best so far (time)",
            line={"color": "#d62728"},
            showlegend=False,
        ),
        row=1,
        col=2,
    )
    if result.floor is not None:
        for col in (1, 2):
            _floor_line(fig, plotly, result.floor.val_macro_f1, row=1, col=col)
    fig.update_xaxes(title_text="trial (start order)", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="minutes since start", row=1, col=2)
    fig.update_yaxes(title_text=config.OBJECTIVE, row=1, col=1)
    fig.update_layout(height=380)
    return panel._replace(figures=(fig,))


def _trial_colors(trial_ids) -> dict[str, str]:
    """One colour per trial (leaderboard order, so the best trial gets the first colour)."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.Dark24
    return {t: palette[i % len(palette)] for i, t in enumerate(trial_ids)}


def _panel_curves(result: RunAnalysis, plotly: _Plotly) -> Panel:
    go = plotly.go
    curves, table = result.curves, result.table
    panel = Panel(
        id="curves",
        title="Learning curves",
        caption="Left: validation macro-F1 after each epoch; right: validation loss (solid) and "
        "training loss (dotted), where a widening gap is overfitting. One colour per trial "
        "(click a trial in the legend to hide it); the marker is its status: circle completed, "
        "cross stopped by ASHA, open circle unfinished, triangle failed. Dotted grey lines are "
        "ASHA's rungs.",
    )
    if not len(curves):
        return panel._replace(note="no evaluation has been reported yet")
    status = table.set_index("trial_id")["status"].to_dict()
    # Leaderboard order: the legend lists the best trial first.
    drawn = list(dict.fromkeys(curves["trial_id"]))
    order = [t for t in table["trial_id"] if t in drawn] + [
        t for t in drawn if t not in set(table["trial_id"])
    ]
    colors = _trial_colors(order)
    groups = dict(tuple(curves.groupby("trial_id", sort=False)))
    fig = plotly.make_subplots(
        rows=1, cols=2, subplot_titles=(config.OBJECTIVE, "loss"), horizontal_spacing=0.08
    )
    for trial_id in order:
        group = groups[trial_id]
        state = status.get(trial_id, "unfinished")
        color = colors.get(trial_id, "#999")
        style = {
            "mode": "lines+markers",
            "legendgroup": trial_id,
            "marker": {"symbol": STATUS_SYMBOLS.get(state, "circle"), "size": 8, "color": color},
        }
        fig.add_trace(
            go.Scatter(
                x=group[config.EPOCH],
                y=group[config.OBJECTIVE],
                name=f"{trial_id} ({state})",
                line={"color": color, "width": 1.5},
                hovertemplate=f"{trial_id} ({state}) epoch %{{x}}: %{{y:.4f}}<extra></extra>",
                **style,
            ),
            row=1,
            col=1,
        )
        for column, dash, what in (
            (config.VAL_LOSS, "solid", "validation loss"),
            (config.TRAIN_LOSS, "dot", "training loss"),
        ):
            if column in group and group[column].notna().any():
                fig.add_trace(
                    go.Scatter(
                        x=group[config.EPOCH],
                        y=group[column],
                        name=f"{trial_id} {what}",
                        showlegend=False,
                        line={"color": color, "width": 1.5, "dash": dash},
                        hovertemplate=f"{trial_id} {what} epoch %{{x}}: %{{y:.4f}}<extra></extra>",
                        **style,
                    ),
                    row=1,
                    col=2,
                )
    for rung in result.rungs:
        fig.add_vline(x=rung, line_dash="dot", line_color="#bbbbbb", row="all", col="all")
    if result.floor is not None:
        _floor_line(fig, plotly, result.floor.val_macro_f1, row=1, col=1)
    if result.whole_epochs:
        # Whole epochs: a tick per epoch, and room for the markers at the first and last.
        low, high = curves[config.EPOCH].min(), curves[config.EPOCH].max()
        fig.update_xaxes(dtick=1, tick0=0, range=[low - 0.15, high + 0.15])
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=config.OBJECTIVE, row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy loss", row=1, col=2)
    fig.update_layout(height=440, legend={"title": {"text": "trial (status)"}})
    return panel._replace(figures=(fig,))


def _panel_slices(result: RunAnalysis, plotly: _Plotly) -> Panel:
    searched = result.run.manifest.space.searched
    panel = Panel(
        id="slices",
        title="Slice plots",
        caption="Each trial's best validation macro-F1 against one searched parameter at a "
        "time, coloured by status (stopped trials trained fewer epochs); a categorical "
        "parameter has one column per choice, a log-uniform one a log axis.",
    )
    scored, values = _scored_values(result)
    if not len(scored) or not searched:
        return panel._replace(
            note="no trial has been scored yet" if searched else "nothing was searched"
        )
    cols = min(3, len(searched))
    rows = int(np.ceil(len(searched) / cols))
    fig = plotly.make_subplots(rows=rows, cols=cols, subplot_titles=searched, shared_yaxes=True)
    for i, key in enumerate(searched):
        axis = result.axes.get(key)
        x = values[key] if key in values else scored[key]
        where = {"row": i // cols + 1, "col": i % cols + 1}
        fig.add_trace(
            plotly.go.Scatter(
                x=x,
                y=scored[config.OBJECTIVE],
                mode="markers",
                marker={
                    "color": [STATUS_COLORS.get(s, "#999") for s in scored["status"]],
                    "size": 9,
                },
                text=scored["trial_id"],
                showlegend=False,
                hovertemplate=f"{key}=%{{x}}<br>%{{y:.4f}}<br>%{{text}}<extra></extra>",
            ),
            **where,
        )
        if axis is None or axis.scale == "category":
            order = _categories(axis, x.astype(str)) if axis is not None else None
            fig.update_xaxes(type="category", categoryorder="array", categoryarray=order, **where)
        elif axis.scale == "log":
            fig.update_xaxes(type="log", **where)
        else:
            fig.update_xaxes(tickformat=NUMBER_FORMAT, **where)
    fig.update_yaxes(title_text=config.OBJECTIVE, col=1)
    fig.update_layout(height=300 * rows)
    return panel._replace(figures=(fig,))


def _panel_tokens(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="tokens",
        title="Token lengths of the training texts",
        caption="Tokens per training text (special tokens included) with the run's "
        "tokenizer; red lines are the max_length values of the run, labelled with the share of "
        "training texts each would truncate.",
    )
    tokens = result.tokens
    if tokens is None:
        return panel._replace(note=result.notes.get("tokens", "not computed"))
    fig = plotly.go.Figure(plotly.go.Histogram(x=tokens.lengths, nbinsx=60, marker_color="#1f77b4"))
    for _, cut in tokens.cuts.iterrows():
        fig.add_vline(
            x=cut["max_length"],
            line_color="#d62728",
            line_dash="dash",
            annotation_text=f"{cut['max_length']}: {cut['truncated_share']:.1%} cut",
            annotation_position="top right",
        )
    fig.update_layout(height=360, xaxis_title="tokens per text", yaxis_title="training texts")
    return panel._replace(figures=(fig,), html=(_table_html(tokens.cuts, floats="{:.3f}"),))


def _panel_data(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="data",
        title="Data",
        caption="Split sizes and class balance of the cleaned data the search saw ('available': "
        "before data.train_size / data.val_size subsampled), and the rows cleaning dropped by "
        "reason (the test split is held out for the exported winner).",
    )
    summary = result.data
    if summary is None:
        return panel._replace(note=result.notes.get("data", "not computed"))
    figures = ()
    shares = summary.class_shares
    if len(shares):
        fig = plotly.go.Figure(
            [
                plotly.go.Bar(x=list(shares.index), y=shares[label].tolist(), name=label)
                for label in shares.columns
            ]
        )
        fig.update_layout(
            barmode="stack", height=300, yaxis_tickformat=".0%", yaxis_title="share of split"
        )
        figures = (fig,)
    note = ""
    used, available = summary.train_used, summary.train_available
    if used is not None and available and used < available:
        note = (
            f"The trials trained on {used} of the {available} training examples "
            f"({used / available:.1%}): data.train_size subsampled them, stratified by class."
        )
    tables = "".join(_table_html(t) for t in (summary.splits, summary.dropped, summary.facts))
    return panel._replace(note=note, figures=figures, html=(f"<div class='tables'>{tables}</div>",))


def _panel_winner(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="winner",
        title="The winner on the validation split",
        caption="Confusion matrix (rows: true class, columns: predicted) and per-class "
        "precision and recall of the winner's kept checkpoint on the validation split (after a "
        "confirmation over seeds: the best seed of the configuration with the best mean).",
    )
    confusion = result.confusion
    if confusion is None:
        return panel._replace(note=result.notes.get("confusion", "not computed"))
    matrix = confusion.matrix
    share = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0)
    fig = plotly.go.Figure(
        plotly.go.Heatmap(
            z=share.values,
            x=[f"pred {c}" for c in matrix.columns],
            y=[f"true {c}" for c in matrix.index],
            text=[
                [f"{n}<br>{s:.0%}" for n, s in zip(r1, r2, strict=True)]
                for r1, r2 in zip(matrix.values, share.values, strict=True)
            ],
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "row share"},
        )
    )
    fig.update_layout(height=380, width=560, yaxis_autorange="reversed")
    note = (
        f"Trial {confusion.trial_id}, checkpoint {confusion.checkpoint}: "
        f"{config.OBJECTIVE} {confusion.val_macro_f1:.4f} recomputed here."
    )
    return panel._replace(
        note=note,
        figures=(fig,),
        html=(_table_html(confusion.per_class, floats="{:.3f}"),),
    )


def _panel_manifest(result: RunAnalysis, plotly: _Plotly) -> Panel:
    panel = Panel(
        id="manifest",
        title="Run manifest",
        caption="What this run was: space, model, strategy, seed, git commit, package "
        "versions, host, device and budget, as recorded when the search started.",
    )
    if result.manifest is None:
        return panel._replace(note=result.notes.get("manifest", "not computed"))
    # Side by side by section (space, data, budget, versions, …) so the page stays short.
    frame = result.manifest
    section = frame["item"].map(lambda k: k.split(".", 1)[0] if "." in k else "run")
    tables = "".join(
        _table_html(frame[section == name].rename(columns={"item": name}))
        for name in dict.fromkeys(section)
    )
    return panel._replace(html=(f"<div class='tables'>{tables}</div>",))


_PANELS = (
    _panel_leaderboard,
    _panel_confirmation,
    _panel_latency,
    _panel_importance,
    _panel_parallel,
    _panel_history,
    _panel_curves,
    _panel_slices,
    _panel_tokens,
    _panel_data,
    _panel_winner,
    _panel_manifest,
)


# --- terminal ----------------------------------------------------------------------------


def summary(result: RunAnalysis, *, report: Path | None = None, top: int = 5) -> str:
    """A few lines for the terminal: top trials with the floor at its rank, the most important
    parameters (with their spread) and where the report is."""
    shown, rank = result.board
    if rank is not None and rank > top:
        # The floor's row, after the top trials.
        shown = pd.concat([shown.head(top), shown.iloc[[rank]]], ignore_index=True)
    else:
        shown = shown.head(top + (rank is not None))
    lines = [f"Top trials of {result.run.path} (best epoch's {config.OBJECTIVE}):"]
    if result.verdict is not None:
        lines.insert(0, _verdict_line(result.verdict))
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        lines.append(shown.to_string(index=False, na_rep=""))
    lines.append(_floor_note(result))
    winner = _confirmed_winner_line(result)
    if winner:
        lines.append(winner)
    lines.append(_importance_line(result))
    for part in ("confusion", "tokens"):
        if part in result.notes:
            lines.append(f"{part}: {result.notes[part]}")
    if report is not None:
        lines.append(f"report: {report}")
    return "\n".join(lines)


def _importance_line(result: RunAnalysis) -> str:
    frame = result.importance
    if frame is None:
        return f"importance: {result.notes.get('importance', 'not computed')}"
    if frame["importance_mean"].isna().all():
        return "importance: " + "; ".join(n for n in frame["note"].unique() if n)
    top = frame[frame["note"] == ""].head(3)
    items = ", ".join(
        f"{r.param} {r.importance_mean:.2f} [{r.low:.2f}-{r.high:.2f}]" for r in top.itertuples()
    )
    epoch, n = frame["fidelity_epoch"].iloc[0], int(frame["n_trials"].iloc[0])
    return f"importance (fANOVA at epoch {epoch:g}, {n} trials; mean [5-95%]): {items}"
