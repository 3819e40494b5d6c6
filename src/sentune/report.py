"""Draw a run's analysis: one self-contained HTML report (Plotly, no CDN) and a terminal summary.

Everything drawn here is computed by `analysis.py`; this module only turns that data into
figures, tables and text.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis import RANKING_RULE, RunAnalysis
from sentune.errors import SentuneError

log = logging.getLogger(__name__)

REPORT = "report.html"
#: Colour of each trial status, the same in every panel.
STATUS_COLORS = {
    "completed": "#1f77b4",
    "stopped": "#ff7f0e",
    "unfinished": "#7f7f7f",
    "error": "#d62728",
}
FLOOR_COLOR = "#2ca02c"


def _plotly():
    """Plotly's modules, or a one-line error that says what to install."""
    try:
        import plotly.graph_objects as go
        import plotly.io as pio
        from plotly.subplots import make_subplots
    except ImportError:
        raise SentuneError(
            "the report needs plotly: pip install plotly (or reinstall sentune)"
        ) from None
    return go, pio, make_subplots


def write_report(result: RunAnalysis, out_dir: str | Path) -> Path:
    """Write `<out_dir>/report.html`: every panel of the run, plotly.js embedded once.

    Args:
        result: `analysis.analyze(run_dir)`.
        out_dir: `analysis/<run>`.

    Returns:
        The path of the report.
    """
    go, pio, make_subplots = _plotly()
    panels = [
        _panel_leaderboard(result, go),
        _panel_importance(result, go),
        _panel_parallel(result, go),
        _panel_history(result, go, make_subplots),
        _panel_curves(result, go),
        _panel_slices(result, go, make_subplots),
        _panel_tokens(result, go),
        _panel_data(result, go),
        _panel_winner(result, go),
        _panel_manifest(result),
    ]
    body, first = [], True
    for panel in panels:
        parts = [f'<section id="{panel["id"]}"><h2>{html.escape(panel["title"])}</h2>']
        parts.append(f'<p class="caption">{html.escape(panel["caption"])}</p>')
        if panel.get("note"):
            parts.append(f'<p class="note">{html.escape(panel["note"])}</p>')
        for i, fig in enumerate(panel.get("figures", [])):
            fig.update_layout(template="plotly_white", margin={"t": 40, "l": 60, "r": 30})
            parts.append(
                pio.to_html(
                    fig,
                    full_html=False,
                    include_plotlyjs=first,
                    div_id=f"fig-{panel['id']}-{i}",
                    config={"displaylogo": False, "responsive": True},
                )
            )
            first = False
        parts.extend(panel.get("html", []))
        parts.append("</section>")
        body.append("\n".join(parts))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(_page(result, "\n".join(body)), encoding="utf-8")
    tmp.replace(path)
    return path


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
"""


def _page(result: RunAnalysis, body: str) -> str:
    manifest = result.run.manifest
    title = f"sentune report: {manifest.run}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='lead'>{html.escape(_headline(result))}</p>"
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
    scored = table.dropna(subset=[config.OBJECTIVE])
    if len(scored):
        best = scored.iloc[0]
        text += f" Best {config.OBJECTIVE} {best[config.OBJECTIVE]:.4f} (trial {best['trial_id']})"
        if result.floor is not None:
            gap = best[config.OBJECTIVE] - result.floor.val_macro_f1
            text += f"; TF-IDF floor {result.floor.val_macro_f1:.4f} ({gap:+.4f})"
        text += "."
    return text


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


def _leaderboard_with_floor(result: RunAnalysis) -> tuple[pd.DataFrame, int | None]:
    """The leaderboard's shown columns with the floor inserted at its rank (row index)."""
    searched = result.run.manifest.space.searched
    columns = [
        "trial_id",
        config.OBJECTIVE,
        "best_epoch",
        "epochs",
        "status",
        "rung",
        "train_s",
        config.TRAIN_SAMPLES_PER_S,
        *searched,
    ]
    shown = result.table[columns].copy()
    if result.floor is None:
        return shown, None
    # Trials that tie with the floor rank above it; they do not beat it (see the headline).
    rank = int((shown[config.OBJECTIVE] >= result.floor.val_macro_f1).sum())
    floor_row = pd.DataFrame(
        [{"trial_id": "TF-IDF floor", config.OBJECTIVE: result.floor.val_macro_f1}]
    )
    shown = pd.concat([shown.iloc[:rank], floor_row, shown.iloc[rank:]], ignore_index=True)
    return shown, rank


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


def _panel_leaderboard(result: RunAnalysis, go) -> dict[str, Any]:
    shown, rank = _leaderboard_with_floor(result)
    table_html = _table_html(shown, row_classes={rank: "floor"} if rank is not None else None)
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
        )
    )
    if result.floor is not None:
        _floor_line(fig, result.floor.val_macro_f1)
    fig.update_layout(
        height=340,
        xaxis_title="trial (best first)",
        yaxis_title=f"{config.OBJECTIVE} (best epoch)",
        xaxis_type="category",
    )
    return {
        "id": "leaderboard",
        "title": "Leaderboard",
        "caption": f"Each trial scored by its best epoch's validation macro-F1. {RANKING_RULE} Dot "
        "colour is the trial's status (blue completed, orange stopped by ASHA, grey unfinished, "
        "red failed); the green line is the TF-IDF floor.",
        "note": _floor_note(result),
        "figures": [fig],
        "html": [table_html],
    }


def _floor_line(fig, value: float, **where) -> None:
    fig.add_hline(
        y=value,
        line_dash="dash",
        line_color=FLOOR_COLOR,
        annotation_text=f"TF-IDF floor {value:.3f}",
        annotation_position="bottom right",
        **where,
    )


def _panel_importance(result: RunAnalysis, go) -> dict[str, Any]:
    panel = {
        "id": "importance",
        "title": "Parameter importance (fANOVA, equal fidelity)",
        "caption": "Share of the score's variance each parameter explains alone, among trials "
        "compared at the same epoch (their score at that epoch, not their best); bars are the "
        "mean over forest seeds and bootstrap resamples of the trials, whiskers span the 5th to "
        "95th percentile: a whisker that reaches zero is noise.",
    }
    frame = result.importance
    if frame is None:
        panel["note"] = result.notes.get("importance", "not computed")
        return panel
    if frame["importance_mean"].isna().all():
        panel["note"] = "; ".join(n for n in frame["note"].unique() if n)
        return panel
    epoch, n = frame["fidelity_epoch"].iloc[0], int(frame["n_trials"].iloc[0])
    panel["note"] = f"{n} trials compared at epoch {epoch:g}." + "".join(
        f" {r.param}: {r.note}." for r in frame.itertuples() if r.note
    )
    ordered = frame.iloc[::-1]
    fig = go.Figure(
        go.Bar(
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
    panel["figures"] = [fig]
    panel["html"] = [_table_html(frame.drop(columns=["note"]), floats="{:.3f}")]
    return panel


def _panel_parallel(result: RunAnalysis, go) -> dict[str, Any]:
    searched = result.run.manifest.space.searched
    scored = result.table.dropna(subset=[config.OBJECTIVE])
    panel = {
        "id": "parallel",
        "title": "Parallel coordinates",
        "caption": "One line per scored trial through its parameter values, coloured by its "
        "best validation macro-F1 (last axis).",
    }
    if not len(scored):
        panel["note"] = "no trial has been scored yet"
        return panel
    dims = [
        _dimension(np.log10(scored[key].astype(float)), f"log10 {key}")
        if _is_log(result, key)
        else _dimension(scored[key], key)
        for key in searched
    ]
    dims.append(_dimension(scored[config.OBJECTIVE], config.OBJECTIVE))
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": scored[config.OBJECTIVE],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "F1"},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(height=420, margin={"l": 80, "r": 80})
    panel["figures"] = [fig]
    return panel


def _dimension(values: pd.Series, label: str) -> dict[str, Any]:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
        return {"label": label, "values": numeric.tolist()}
    # Categories (strings, None, mixed) become evenly spaced ticks.
    names = sorted({str(v) for v in values})
    codes = [names.index(str(v)) for v in values]
    return {
        "label": label,
        "values": codes,
        "tickvals": list(range(len(names))),
        "ticktext": names,
        "range": [-0.5, len(names) - 0.5] if len(names) > 1 else [-1, 1],
    }


def _panel_history(result: RunAnalysis, go, make_subplots) -> dict[str, Any]:
    by_trial, by_time = result.history
    panel = {
        "id": "history",
        "title": "Optimization history",
        "caption": "Left: each trial's best score in the order trials started, with the best so "
        "far. Right: the best score reported by any trial so far against wall-clock time since "
        "the search started.",
    }
    if not len(by_trial):
        panel["note"] = "no trial has been scored yet"
        return panel
    fig = make_subplots(rows=1, cols=2, subplot_titles=("by trial", "by wall time"))
    fig.add_trace(
        go.Scatter(
            x=by_trial["trial_index"],
            y=by_trial["value"],
            mode="markers",
            name="trial",
            text=by_trial["trial_id"],
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
            text=by_time["trial_id"],
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
            _floor_line(fig, result.floor.val_macro_f1, row=1, col=col)
    fig.update_xaxes(title_text="trial (start order)", row=1, col=1)
    fig.update_xaxes(title_text="minutes since start", row=1, col=2)
    fig.update_yaxes(title_text=config.OBJECTIVE, row=1, col=1)
    fig.update_layout(height=380)
    panel["figures"] = [fig]
    return panel


def _panel_curves(result: RunAnalysis, go) -> dict[str, Any]:
    curves, table = result.curves, result.table
    panel = {
        "id": "curves",
        "title": "Learning curves",
        "caption": "Validation macro-F1 after each epoch, one line per trial; a cross marks "
        "where ASHA stopped a trial, a circle an unfinished one; dotted lines are ASHA's rungs.",
    }
    if not len(curves):
        panel["note"] = "no evaluation has been reported yet"
        return panel
    status = table.set_index("trial_id")["status"].to_dict()
    fig = go.Figure()
    for trial_id, group in curves.groupby("trial_id", sort=False):
        state = status.get(trial_id, "unfinished")
        fig.add_trace(
            go.Scatter(
                x=group[config.EPOCH],
                y=group[config.OBJECTIVE],
                mode="lines+markers",
                name=f"{trial_id} ({state})",
                line={"color": STATUS_COLORS.get(state, "#999"), "width": 1.5},
                marker={"size": 5},
            )
        )
        if state in ("stopped", "unfinished"):
            last = group.iloc[-1]
            fig.add_trace(
                go.Scatter(
                    x=[last[config.EPOCH]],
                    y=[last[config.OBJECTIVE]],
                    mode="markers",
                    marker={
                        "symbol": "x" if state == "stopped" else "circle-open",
                        "size": 12,
                        "color": STATUS_COLORS[state],
                    },
                    showlegend=False,
                    hovertemplate=f"{trial_id}: {state} at epoch %{{x}}<extra></extra>",
                )
            )
    for rung in result.rungs:
        fig.add_vline(x=rung, line_dash="dot", line_color="#bbbbbb")
    if result.floor is not None:
        _floor_line(fig, result.floor.val_macro_f1)
    fig.update_layout(height=420, xaxis_title="epoch", yaxis_title=config.OBJECTIVE)
    panel["figures"] = [fig]
    return panel


def _panel_slices(result: RunAnalysis, go, make_subplots) -> dict[str, Any]:
    searched = result.run.manifest.space.searched
    scored = result.table.dropna(subset=[config.OBJECTIVE])
    panel = {
        "id": "slices",
        "title": "Slice plots",
        "caption": "Each trial's best validation macro-F1 against one searched parameter at a "
        "time, coloured by status (stopped trials trained fewer epochs).",
    }
    if not len(scored) or not searched:
        panel["note"] = "no trial has been scored yet" if searched else "nothing was searched"
        return panel
    cols = min(3, len(searched))
    rows = int(np.ceil(len(searched) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=searched, shared_yaxes=True)
    for i, key in enumerate(searched):
        values = scored[key]
        numeric = pd.to_numeric(values, errors="coerce")
        x = numeric if numeric.notna().all() else values.astype(str)
        fig.add_trace(
            go.Scatter(
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
            row=i // cols + 1,
            col=i % cols + 1,
        )
        if _is_log(result, key):
            fig.update_xaxes(type="log", row=i // cols + 1, col=i % cols + 1)
        if not numeric.notna().all():
            fig.update_xaxes(type="category", row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(title_text=config.OBJECTIVE, col=1)
    fig.update_layout(height=300 * rows)
    panel["figures"] = [fig]
    return panel


def _is_log(result: RunAnalysis, key: str) -> bool:
    """A loguniform parameter, or a learning rate whose values span a decade or more."""
    text = result.run.manifest.space.text
    line = next((ln for ln in text.splitlines() if ln.strip().startswith(key + ":")), "")
    if "loguniform" in line:
        return True
    values = pd.to_numeric(result.table[key], errors="coerce").dropna()
    return (
        key == "train.learning_rate"
        and len(values) > 0
        and values.min() > 0
        and (values.max() / values.min() >= 10)
    )


def _panel_tokens(result: RunAnalysis, go) -> dict[str, Any]:
    panel = {
        "id": "tokens",
        "title": "Token lengths of the training texts",
        "caption": "Tokens per training text (special tokens included) with the run's "
        "tokenizer; red lines are the max_length values of the run, labelled with the share of "
        "training texts each would truncate.",
    }
    tokens = result.tokens
    if tokens is None:
        panel["note"] = result.notes.get("tokens", "not computed")
        return panel
    fig = go.Figure(go.Histogram(x=tokens.lengths, nbinsx=60, marker_color="#1f77b4"))
    for _, cut in tokens.cuts.iterrows():
        fig.add_vline(
            x=cut["max_length"],
            line_color="#d62728",
            line_dash="dash",
            annotation_text=f"{cut['max_length']}: {cut['truncated_share']:.1%} cut",
            annotation_position="top right",
        )
    fig.update_layout(height=360, xaxis_title="tokens per text", yaxis_title="training texts")
    panel["figures"] = [fig]
    panel["html"] = [_table_html(tokens.cuts, floats="{:.3f}")]
    return panel


def _panel_data(result: RunAnalysis, go) -> dict[str, Any]:
    panel = {
        "id": "data",
        "title": "Data",
        "caption": "Split sizes and class balance of the cleaned data the search saw, and the "
        "rows cleaning dropped by reason (the test split is held out for the exported winner).",
    }
    summary = result.data
    if summary is None:
        panel["note"] = result.notes.get("data", "not computed")
        return panel
    counts = result.run.manifest.data.stats.get("class_counts", {})
    if counts:
        fig = go.Figure()
        labels = list(next(iter(counts.values())))
        for label in labels:
            splits = list(counts)
            totals = [sum(counts[s].values()) or 1 for s in splits]
            fig.add_trace(
                go.Bar(
                    x=splits,
                    y=[counts[s].get(label, 0) / t for s, t in zip(splits, totals, strict=True)],
                    name=label,
                )
            )
        fig.update_layout(
            barmode="stack", height=300, yaxis_tickformat=".0%", yaxis_title="share of split"
        )
        panel["figures"] = [fig]
    panel["html"] = [
        "<div class='tables'>"
        + "".join(_table_html(summary[k]) for k in ("splits", "dropped", "facts"))
        + "</div>"
    ]
    return panel


def _panel_winner(result: RunAnalysis, go) -> dict[str, Any]:
    panel = {
        "id": "winner",
        "title": "The winner on the validation split",
        "caption": "Confusion matrix (rows: true class, columns: predicted) and per-class "
        "precision and recall of the best trial's kept checkpoint on the validation split.",
    }
    confusion = result.confusion
    if confusion is None:
        panel["note"] = result.notes.get("confusion", "not computed")
        return panel
    matrix = confusion.matrix
    share = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0)
    fig = go.Figure(
        go.Heatmap(
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
    panel["note"] = (
        f"Trial {confusion.trial_id}, checkpoint {confusion.checkpoint}: "
        f"{config.OBJECTIVE} {confusion.val_macro_f1:.4f} recomputed here."
    )
    panel["figures"] = [fig]
    panel["html"] = [_table_html(confusion.per_class, floats="{:.3f}")]
    return panel


def _panel_manifest(result: RunAnalysis) -> dict[str, Any]:
    panel = {
        "id": "manifest",
        "title": "Run manifest",
        "caption": "What this run was: space, model, strategy, seed, git commit, package "
        "versions, host, device and budget, as recorded when the search started.",
    }
    if result.manifest is None:
        panel["note"] = result.notes.get("manifest", "not computed")
        return panel
    panel["html"] = [_table_html(result.manifest)]
    return panel


# --- terminal ----------------------------------------------------------------------------


def summary(result: RunAnalysis, *, report: Path | None = None, top: int = 5) -> str:
    """A few lines for the terminal: top trials with the floor at its rank, the most important
    parameters (with their spread) and where the report is."""
    shown, rank = _leaderboard_with_floor(result)
    if rank is not None and rank > top:
        # The floor's row, after the top trials.
        shown = pd.concat([shown.head(top), shown.iloc[[rank]]], ignore_index=True)
    else:
        shown = shown.head(top + (rank is not None))
    lines = [f"Top trials of {result.run.path} (best epoch's {config.OBJECTIVE}):"]
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        lines.append(shown.to_string(index=False, na_rep=""))
    lines.append(_floor_note(result))
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


# --- headless browser: screenshot and render check ---------------------------------------

_CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
_MARKER = "sentune-render-check"
#: Injected first into a copy of the report: records script errors and console errors, then,
#: once the page has loaded, writes which figure divs Plotly rendered into a marker element.
_PROBE = (
    """<script>
window.__sentuneErrors = [];
window.addEventListener("error", function (e) { window.__sentuneErrors.push(String(e.message)); });
window.addEventListener("unhandledrejection", function (e) {
  window.__sentuneErrors.push("unhandled rejection: " + String(e.reason)); });
(function () { var original = console.error; console.error = function () {
  window.__sentuneErrors.push(Array.prototype.join.call(arguments, " "));
  return original.apply(console, arguments); }; })();
window.addEventListener("load", function () { setTimeout(function () {
  var figures = Array.prototype.map.call(document.querySelectorAll("div.plotly-graph-div"),
    function (d) { return {id: d.id, rendered: !!d.querySelector(".plot-container svg")}; });
  var out = document.createElement("pre"); out.id = "MARKER";
  out.textContent = JSON.stringify({errors: window.__sentuneErrors, figures: figures});
  document.body.appendChild(out); }, 1000); });
</script>"""
).replace("MARKER", _MARKER)


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    return next((path for name in _CHROMIUM if (path := shutil.which(name))), None)


def _chromium(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    browser = find_chromium()
    if browser is None:
        raise SentuneError(
            "no Chromium found for the screenshot; install it (Debian: apt-get install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="sentune-chromium-") as profile:
        return subprocess.run(
            [browser, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def screenshot(report: str | Path, png: str | Path, *, timeout: float = 120) -> Path:
    """Save a PNG of the top of the report (1400 x 2000 pixels) with headless Chromium."""
    png = Path(png).resolve()
    done = _chromium(
        [
            f"--screenshot={png}",
            "--window-size=1400,2000",
            "--virtual-time-budget=10000",
            Path(report).resolve().as_uri(),
        ],
        timeout=timeout,
    )
    if not png.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise SentuneError(f"Chromium wrote no screenshot of {report}: {tail}")
    return png


class RenderCheck(NamedTuple):
    """What a headless browser saw when it opened the report."""

    #: JavaScript errors and console errors, in order.
    errors: list[str]
    #: Figure div ids and whether Plotly drew each.
    figures: dict[str, bool]


def check_render(report: str | Path, *, timeout: float = 180) -> RenderCheck:
    """Open a copy of the report in headless Chromium and report script errors and which
    figures were drawn (a probe script injected before anything else records both)."""
    text = Path(report).read_text(encoding="utf-8")
    probed = text.replace("<head>", "<head>" + _PROBE, 1)
    with tempfile.TemporaryDirectory(prefix="sentune-check-") as folder:
        copy = Path(folder) / "report.html"
        copy.write_text(probed, encoding="utf-8")
        done = _chromium(
            ["--dump-dom", "--virtual-time-budget=15000", copy.as_uri()], timeout=timeout
        )
    found = re.search(rf'<pre id="{_MARKER}">(.*?)</pre>', done.stdout, re.S)
    if not found:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return RenderCheck([f"the page never finished loading: {tail}"], {})
    data = json.loads(html.unescape(found.group(1)))
    return RenderCheck(
        errors=list(data["errors"]), figures={f["id"]: f["rendered"] for f in data["figures"]}
    )
