"""Panels of the searched parameters: their importance, parallel coordinates and slice plots,
each parameter drawn on the axis its distribution calls for (`analysis.ParamAxis`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis import RunAnalysis
from sentune.report.panel import NUMBER_FORMAT, STATUS_COLORS, Panel, Plotly, table_html

#: The importance bars' colour at the lowest common rung and at the higher epoch; below the noise.
_FIDELITY_COLORS = ("#4c78a8", "#f58518")
_NOISE_COLOR = "#bbbbbb"


def panel_importance(result: RunAnalysis, plotly: Plotly) -> Panel:
    panel = Panel(
        id="importance",
        title="Parameter importance (fANOVA, equal fidelity)",
        caption="Share of the score's variance each parameter explains alone, among trials "
        "compared at the same epoch (their score at that epoch, not their best): first at the "
        "lowest common rung, which every trial reached, then, where enough trials went further, "
        "at that epoch too (ASHA's survivors alone are a selected sample: what decided which "
        "trials it stopped is constant among them). Bars are the mean over forest seeds and "
        "bootstrap resamples of the trials, whiskers span the 5th to 95th percentile; a grey "
        "bar is below the noise: on these trials it explains no more than it does, at the 95th "
        "percentile, when the scores are shuffled among them. optuna-dashboard's importance "
        "differs: it fits one forest on each trial's last reported value, mixing trials that "
        "ASHA stopped at epoch 1 with trials that trained to the end (crediting parameters "
        "with the effect of training longer), normalises the shares to sum to 1 and gives "
        "neither a spread nor a noise level.",
    )
    frame = result.importance
    if frame is None:
        return panel._replace(note=result.notes.get("importance", "not computed"))
    if frame["importance_mean"].isna().all():
        return panel._replace(note="; ".join(n for n in frame["note"].unique() if n))
    levels = list(dict.fromkeys(zip(frame["fidelity_epoch"], frame["n_trials"], strict=True)))
    epochs = list(dict.fromkeys(frame["fidelity_epoch"]))
    note = " ".join(
        f"At epoch {epoch:g} ({int(frame[frame['fidelity_epoch'] == epoch]['n_trials'].max())} "
        "trials)"
        + ("" if i else ", the lowest common rung")
        + ": "
        + (
            "; ".join(
                f"{r.param}: {r.note}"
                for r in frame[frame["fidelity_epoch"] == epoch].itertuples()
                if r.note
            )
            or "every parameter above the noise"
        )
        + "."
        for i, epoch in enumerate(epochs)
    )
    order = list(dict.fromkeys(frame[frame["fidelity_epoch"] == epochs[0]]["param"]))[::-1]
    fig = plotly.go.Figure()
    for epoch, color in zip(epochs, _FIDELITY_COLORS, strict=False):
        rows = frame[frame["fidelity_epoch"] == epoch].set_index("param").reindex(order)
        n = int(rows["n_trials"].max())
        fig.add_trace(
            plotly.go.Bar(
                name=f"epoch {epoch:g} ({n} trials)",
                x=rows["importance_mean"],
                y=order,
                orientation="h",
                marker_color=[
                    _NOISE_COLOR if below else color for below in rows["below_noise"].fillna(False)
                ],
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": rows["high"] - rows["importance_mean"],
                    "arrayminus": rows["importance_mean"] - rows["low"],
                },
                customdata=rows["noise"],
                hovertemplate="%{y}: %{x:.3f} (noise %{customdata:.3f})<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        height=120 + 40 * len(order) * len(levels),
        xaxis_title="importance (share of the score's variance)",
        xaxis_range=[0, max(1.0, float(frame["high"].max()) * 1.05)],
    )
    table = table_html(frame.drop(columns=["note"]), floats="{:.3f}")
    return panel._replace(note=note, figures=(fig,), html=(table,))


def _scored_values(result: RunAnalysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored trials' leaderboard rows and their parameter values as drawn, aligned."""
    mask = result.table[config.VAL_MACRO_F1].notna()
    values = result.param_values
    if values is None:
        values = pd.DataFrame({"trial_id": result.table["trial_id"]})
    return result.table[mask].reset_index(drop=True), values[mask.to_numpy()].reset_index(drop=True)


def _categories(axis, labels: pd.Series) -> list[str]:
    """The space's choices in its order, then any observed label the space no longer has."""
    known = list(axis.categories)
    return known + [v for v in dict.fromkeys(labels) if v not in known]


def panel_parallel(result: RunAnalysis, plotly: Plotly) -> Panel:
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
            "label": config.VAL_MACRO_F1,
            "values": scored[config.VAL_MACRO_F1].astype(float).tolist(),
            "tickformat": NUMBER_FORMAT,
        }
    )
    fig = plotly.go.Figure(
        plotly.go.Parcoords(
            line={
                "color": scored[config.VAL_MACRO_F1],
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


def panel_slices(result: RunAnalysis, plotly: Plotly) -> Panel:
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
                y=scored[config.VAL_MACRO_F1],
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
    fig.update_yaxes(title_text=config.VAL_MACRO_F1, col=1)
    fig.update_layout(height=300 * rows)
    return panel._replace(figures=(fig,))
