"""Panels of the trials and their scores: the leaderboard, the confirmation over seeds,
macro-F1 against latency, the optimization history and the learning curves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis import COMPLETED, RANKING_RULE, UNFINISHED, RunAnalysis, format_mean_std
from sentune.report.panel import (
    STATUS_COLORS,
    STATUS_SYMBOLS,
    Panel,
    Plotly,
    floor_line,
    table_html,
)
from sentune.report.sentences import confirmed_winner_line, floor_note


def panel_leaderboard(result: RunAnalysis, plotly: Plotly) -> Panel:
    go = plotly.go
    board = result.board
    board_html = table_html(
        board.table, row_classes={board.floor_row: "floor"} if board.floor_row is not None else None
    )
    scored = result.table.dropna(subset=[config.VAL_MACRO_F1])
    # Dots rather than bars: the differences that matter are small against the axis's zero.
    fig = go.Figure(
        go.Scatter(
            x=scored["trial_id"],
            y=scored[config.VAL_MACRO_F1],
            mode="markers",
            marker={"color": [STATUS_COLORS.get(s, "#999") for s in scored["status"]], "size": 12},
            text=scored["status"],
            hovertemplate="trial %{x}<br>%{y:.4f}<br>%{text}<extra></extra>",
            showlegend=False,
        )
    )
    if result.floor is not None:
        floor_line(fig, plotly, result.floor.val_macro_f1)
    fig.update_layout(
        height=340,
        xaxis_title="trial (best first)",
        yaxis_title=f"{config.VAL_MACRO_F1} (best epoch)",
        xaxis_type="category",
    )
    return Panel(
        id="leaderboard",
        title="Leaderboard",
        caption=f"Each trial scored by its best epoch's validation macro-F1. {RANKING_RULE} Dot "
        "colour is the trial's status (blue completed, orange stopped by ASHA, grey unfinished, "
        "red failed); the dashed green line is the TF-IDF floor.",
        note=floor_note(result),
        figures=(fig,),
        html=(board_html,),
    )


def panel_confirmation(result: RunAnalysis, plotly: Plotly) -> Panel:
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
            y=table[config.VAL_MACRO_F1],
            mode="markers",
            marker={"size": 10, "color": STATUS_COLORS[COMPLETED], "opacity": 0.7},
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
        floor_line(fig, plotly, result.floor.val_macro_f1)
    fig.update_layout(
        height=340,
        xaxis={"title": "configuration (its search trial; best mean first)", "type": "category",
               "categoryorder": "array", "categoryarray": order},
        yaxis_title=f"{config.VAL_MACRO_F1} (best epoch)",
    )  # fmt: skip
    shown = confirmed.configs.copy()
    shown["mean ± std"] = [
        format_mean_std(table.loc[table["trial_id"] == t, config.VAL_MACRO_F1].tolist())
        if n
        else ""
        for t, n in zip(shown["trial_id"], shown["n_seeds"], strict=True)
    ]
    return panel._replace(
        note=confirmed_winner_line(result),
        figures=(fig,),
        html=(table_html(shown.drop(columns=["mean", "std"])),),
    )


def panel_latency(result: RunAnalysis, plotly: Plotly) -> Panel | None:
    """Macro-F1 against p95 latency; None (no section, no entry in the contents) when the run
    measured no latency and did not ask to."""
    front = result.pareto
    asked = result.run.manifest.objective.needs_latency
    if front is None and not asked and "pareto" not in (result.notes or {}):
        return None
    panel = Panel(
        id="latency",
        title="Macro-F1 against latency",
        caption=f"Each trial's {config.VAL_MACRO_F1} (best epoch, as in the leaderboard) against "
        "its p95 latency at batch 1 (measured once per trial, the way it is served: ONNX or int8 "
        "ONNX on the CPU, PyTorch on a GPU; stopped trials too). The line joins the Pareto "
        "front (no other trial is both better and faster); the dashed line is the latency "
        "budget, the star the best trial on the front within it (what `sentune export "
        "--max-latency-ms` picks).",
    )
    if front is None:
        why = (result.notes or {}).get("pareto") or "no trial has measured its latency yet"
        return panel._replace(note=why)
    go, table = plotly.go, front.table
    fig = go.Figure()
    for on_front, name, color in ((False, "trial", "#aaaaaa"), (True, "on the front", "#1f77b4")):
        part = table[table["on_front"] == on_front]
        fig.add_trace(
            go.Scatter(
                x=part[config.LATENCY_P95_MS],
                y=part[config.VAL_MACRO_F1],
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
            y=line[config.VAL_MACRO_F1],
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
                y=[chosen[config.VAL_MACRO_F1]],
                mode="markers",
                marker={"size": 18, "symbol": "star", "color": "#d62728"},
                name="chosen",
                hovertemplate=f"chosen: trial {front.chosen}<extra></extra>",
            )
        )
    elif front.budget_ms is not None:
        note = f"no trial on the front meets the budget of {front.budget_ms:g} ms"
    fig.update_layout(
        height=400, xaxis_title="p95 latency at batch 1 (ms)", yaxis_title=config.VAL_MACRO_F1
    )
    shown = table.drop(columns=["checkpoint"])
    return panel._replace(note=note, figures=(fig,), html=(table_html(shown),))


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


def panel_history(result: RunAnalysis, plotly: Plotly) -> Panel:
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
            floor_line(fig, plotly, result.floor.val_macro_f1, row=1, col=col)
    fig.update_xaxes(title_text="trial (start order)", dtick=1, row=1, col=1)
    fig.update_xaxes(title_text="minutes since start", row=1, col=2)
    fig.update_yaxes(title_text=config.VAL_MACRO_F1, row=1, col=1)
    fig.update_layout(height=380)
    return panel._replace(figures=(fig,))


def _trial_colors(trial_ids) -> dict[str, str]:
    """One colour per trial (leaderboard order, so the best trial gets the first colour)."""
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.Dark24
    return {t: palette[i % len(palette)] for i, t in enumerate(trial_ids)}


def panel_curves(result: RunAnalysis, plotly: Plotly) -> Panel:
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
        rows=1, cols=2, subplot_titles=(config.VAL_MACRO_F1, "loss"), horizontal_spacing=0.08
    )
    for trial_id in order:
        group = groups[trial_id]
        state = status.get(trial_id, UNFINISHED)
        color = colors.get(trial_id, "#999")
        style = {
            "mode": "lines+markers",
            "legendgroup": trial_id,
            "marker": {"symbol": STATUS_SYMBOLS.get(state, "circle"), "size": 8, "color": color},
        }
        fig.add_trace(
            go.Scatter(
                x=group[config.EPOCH],
                y=group[config.VAL_MACRO_F1],
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
        floor_line(fig, plotly, result.floor.val_macro_f1, row=1, col=1)
    if result.whole_epochs:
        # Whole epochs: a tick per epoch, and room for the markers at the first and last.
        low, high = curves[config.EPOCH].min(), curves[config.EPOCH].max()
        fig.update_xaxes(dtick=1, tick0=0, range=[low - 0.15, high + 0.15])
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=config.VAL_MACRO_F1, row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy loss", row=1, col=2)
    fig.update_layout(height=440, legend={"title": {"text": "trial (status)"}})
    return panel._replace(figures=(fig,))
