"""Panels of the searched parameters: their importance, the two most important against each
other, parallel coordinates and slice plots, each parameter drawn on the axis its distribution
calls for (`analysis.ParamAxis`). A conditional parameter that a trial did not use (its `when:`
condition did not hold) is drawn at a tick of its own, `inactive`, or left out with a note."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sentune import config
from sentune.analysis import RunAnalysis, search_params, value_label
from sentune.errors import SentuneError
from sentune.report.panel import NUMBER_FORMAT, STATUS_COLORS, Panel, Plotly, table_html

#: The importance bars' colour at the lowest common rung and at the higher epoch; below the noise.
_FIDELITY_COLORS = ("#4c78a8", "#f58518")
_NOISE_COLOR = "#bbbbbb"
#: The tick of a trial that did not use a conditional parameter (its `when:` did not hold).
INACTIVE = "inactive"
#: The colour scale of a score (parallel coordinates, contour), with its bar's title.
_SCORE_SCALE = "Viridis"


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


def _column(scored: pd.DataFrame, values: pd.DataFrame, key: str) -> pd.Series:
    return values[key] if key in values else scored[key]


def _is_category(axis) -> bool:
    return axis is None or axis.scale == "category"


def _inactive(values: pd.Series) -> np.ndarray:
    """True where the trial has no value for the parameter: a conditional one it did not use
    (`param_values` gives "" for a choice, NaN for a number)."""
    return np.array(
        [v is None or v == "" or (isinstance(v, float) and np.isnan(v)) for v in values]
    )


def _labels(axis, values: pd.Series) -> pd.Series:
    """A categorical parameter's labels, `INACTIVE` where the trial did not use it."""
    inactive = _inactive(values)
    return pd.Series(
        [INACTIVE if off else (v if isinstance(v, str) else str(v)) for v, off in
         zip(values, inactive, strict=True)],
        index=values.index,
    )  # fmt: skip


def _categories(axis, labels: pd.Series) -> list[str]:
    """The space's choices in its order, then any observed label the space no longer has, then
    `INACTIVE` when a trial did not use the parameter."""
    known = list(axis.categories) if axis is not None else sorted(set(labels) - {INACTIVE})
    extra = [v for v in dict.fromkeys(labels) if v not in known and v != INACTIVE]
    return known + extra + ([INACTIVE] if (labels == INACTIVE).any() else [])


def _conditions(result: RunAnalysis) -> dict[str, str]:
    """When each conditional parameter is used, in words (`head.layers is 1 or 2`); empty when
    the run's space no longer loads."""
    try:
        params = search_params(result.run.manifest)
    except SentuneError:
        return {}
    return {
        key: " and ".join(
            f"{parent} is {' or '.join(value_label(v) for v in allowed)}"
            for parent, allowed in param.when
        )
        for key, param in params.items()
        if param.when
    }


def _inactive_counts(values: pd.DataFrame, keys) -> dict[str, int]:
    """How many trials did not use each of `keys` (only those with any)."""
    counts = {key: int(_inactive(values[key]).sum()) for key in keys if key in values}
    return {key: n for key, n in counts.items() if n}


def _inactive_note(result: RunAnalysis, counts: dict[str, int], total: int, where: str) -> str:
    """`head.width: 2 of 6 trials did not use it (used only when head.layers is 1 or 2) …`."""
    if not counts:
        return ""
    conditions = _conditions(result)
    parts = [
        f"{key}: {n} of {total} trials did not use it"
        + (f" (used only when {conditions[key]})" if key in conditions else "")
        for key, n in counts.items()
    ]
    return f"Inactive values, {where}: " + "; ".join(parts) + "."


def panel_parallel(result: RunAnalysis, plotly: Plotly) -> Panel:
    panel = Panel(
        id="parallel",
        title="Parallel coordinates",
        caption="One line per scored trial through its parameter values, coloured by its "
        "best validation macro-F1 (last axis; colour bar on the right); a categorical "
        "parameter has one tick per choice, a log-uniform one a log axis; a trial that did not "
        f"use a conditional parameter passes through its '{INACTIVE}' tick.",
    )
    scored, values = _scored_values(result)
    if not len(scored):
        return panel._replace(note="no trial has been scored yet")
    searched = result.run.manifest.space.searched
    dims = [_dimension(result.axes.get(key), _column(scored, values, key), key) for key in searched]
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
                "colorscale": _SCORE_SCALE,
                "showscale": True,
                "colorbar": {"title": config.VAL_MACRO_F1, "tickformat": NUMBER_FORMAT},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(height=420, margin={"l": 80, "r": 80})
    counts = _inactive_counts(values, searched)
    note = _inactive_note(result, counts, len(scored), f"at the '{INACTIVE}' tick")
    return panel._replace(note=note, figures=(fig,))


def _dimension(axis, values: pd.Series, key: str) -> dict[str, Any]:
    """A parallel-coordinates axis: categorical as one tick per choice, log with ticks at the
    real values, linear with readable numbers; a trial that did not use the parameter at an
    `INACTIVE` tick (after the choices, or below a numeric range)."""
    if _is_category(axis):
        labels = _labels(axis, values)
        names = _categories(axis, labels)
        return {
            "label": key,
            "values": [names.index(v) for v in labels],
            "tickvals": list(range(len(names))),
            "ticktext": names,
            "range": [-0.25, len(names) - 0.75] if len(names) > 1 else [-1, 1],
        }
    inactive = _inactive(values)
    numbers = values.astype(float).to_numpy()
    log = axis.scale == "log"
    drawn = np.log10(numbers) if log else numbers
    label = f"{key} (log)" if log else key
    if not inactive.any():
        if log:
            ticks = _ticks(drawn)
            return {
                "label": label,
                "values": drawn.tolist(),
                "tickvals": ticks,
                "ticktext": [f"{10**t:.3g}" for t in ticks],
            }
        return {"label": label, "values": drawn.tolist(), "tickformat": NUMBER_FORMAT}
    active = drawn[~inactive]
    ticks = _ticks(active) if len(active) else []
    low, high = (active.min(), active.max()) if len(active) else (0.0, 0.0)
    # Below the range, a fifth of it apart, so the lines of inactive trials do not cross others.
    below = low - 0.2 * ((high - low) or 1.0)
    return {
        "label": label,
        "values": np.where(inactive, below, drawn).tolist(),
        "tickvals": [below, *ticks],
        "ticktext": [INACTIVE] + [f"{10**t:.3g}" if log else f"{t:.3g}" for t in ticks],
    }


def _ticks(drawn: np.ndarray) -> list[float]:
    """Four evenly spaced ticks over the values (one when they are all equal)."""
    low, high = float(np.min(drawn)), float(np.max(drawn))
    return list(np.linspace(low, high, 4)) if high > low else [low]


def panel_slices(result: RunAnalysis, plotly: Plotly) -> Panel:
    searched = result.run.manifest.space.searched
    panel = Panel(
        id="slices",
        title="Slice plots",
        caption="Each trial's best validation macro-F1 against one searched parameter at a "
        "time, the dot's colour its status (legend; stopped trials trained fewer epochs); a "
        "categorical parameter has one column per choice and an "
        f"'{INACTIVE}' column for the trials that did not use it, a log-uniform one a log axis.",
    )
    scored, values = _scored_values(result)
    if not len(scored) or not searched:
        return panel._replace(
            note="no trial has been scored yet" if searched else "nothing was searched"
        )
    cols = min(3, len(searched))
    rows = int(np.ceil(len(searched) / cols))
    fig = plotly.make_subplots(rows=rows, cols=cols, subplot_titles=searched, shared_yaxes=True)
    statuses = list(dict.fromkeys([*STATUS_COLORS, *scored["status"]]))
    in_legend: set[str] = set()
    for i, key in enumerate(searched):
        axis = result.axes.get(key)
        column = _column(scored, values, key)
        where = {"row": i // cols + 1, "col": i % cols + 1}
        if _is_category(axis):
            x, keep = _labels(axis, column), np.ones(len(column), dtype=bool)
        else:
            x, keep = column, ~_inactive(column)
        for status in statuses:
            mask = keep & (scored["status"] == status).to_numpy()
            if not mask.any():
                continue
            fig.add_trace(
                plotly.go.Scatter(
                    x=x[mask],
                    y=scored.loc[mask, config.VAL_MACRO_F1],
                    mode="markers",
                    marker={"color": STATUS_COLORS.get(status, "#999"), "size": 9},
                    text=scored.loc[mask, "trial_id"],
                    name=status,
                    legendgroup=status,
                    showlegend=status not in in_legend,
                    hovertemplate=f"{key}=%{{x}}<br>%{{y:.4f}}<br>%{{text}} ({status})"
                    "<extra></extra>",
                ),
                **where,
            )
            in_legend.add(status)
        if _is_category(axis):
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=_categories(axis, x), **where
            )
        elif axis.scale == "log":
            fig.update_xaxes(type="log", **where)
        else:
            fig.update_xaxes(tickformat=NUMBER_FORMAT, **where)
    fig.update_yaxes(title_text=config.VAL_MACRO_F1, col=1)
    fig.update_layout(height=300 * rows, legend={"title": {"text": "colour: trial status"}})
    counts = _inactive_counts(values, searched)
    numeric = {k: n for k, n in counts.items() if not _is_category(result.axes.get(k))}
    notes = [
        _inactive_note(
            result,
            {k: n for k, n in counts.items() if k not in numeric},
            len(scored),
            f"in the '{INACTIVE}' column",
        ),
        _inactive_note(result, numeric, len(scored), "left out of the slice (no value to place)"),
    ]
    return panel._replace(note=" ".join(n for n in notes if n), figures=(fig,))


def panel_contour(result: RunAnalysis, plotly: Plotly) -> Panel:
    panel = Panel(
        id="contour",
        title="The two most important parameters",
        caption="Each scored trial's best validation macro-F1 over the values of the two "
        "parameters ranked first by importance (at the lowest common rung), as "
        "optuna-dashboard's contour plot shows it: where both are numeric, dots coloured by "
        "score over a contour interpolated between them (the contour is only as good as the "
        "trials near it; the dots are the data); where both are categorical, the mean score "
        "of each pair of values (n: trials); where one is, dots coloured by score.",
    )
    pair, note = _top_pair(result)
    if len(pair) < 2:
        return panel._replace(note=note)
    scored, values = _scored_values(result)
    if not len(scored):
        return panel._replace(note="no trial has been scored yet")
    axes = [result.axes.get(key) for key in pair]
    columns = [_column(scored, values, key) for key in pair]
    keep = np.ones(len(scored), dtype=bool)
    for axis, column in zip(axes, columns, strict=True):
        if not _is_category(axis):
            keep &= ~_inactive(column)
    left_out = _inactive_counts(values, pair)
    numeric_left_out = {k: n for k, n in left_out.items() if not _is_category(result.axes.get(k))}
    notes = [
        note,
        _inactive_note(
            result,
            {k: n for k, n in left_out.items() if k not in numeric_left_out},
            len(scored),
            f"at '{INACTIVE}'",
        ),
        _inactive_note(result, numeric_left_out, len(scored), "left out (no value to place)"),
    ]
    note = " ".join(n for n in notes if n)
    if keep.sum() < 2:
        return panel._replace(note=f"{note} Fewer than 2 trials to draw.".strip())
    score = scored.loc[keep, config.VAL_MACRO_F1].astype(float).to_numpy()
    drawn = [
        _labels(axis, column[keep]).to_numpy()
        if _is_category(axis)
        else column[keep].astype(float).to_numpy()
        for axis, column in zip(axes, columns, strict=True)
    ]
    if all(_is_category(axis) for axis in axes):
        fig = _mean_heatmap(plotly, pair, axes, drawn, score)
    else:
        fig = _score_scatter(plotly, pair, axes, drawn, score, scored.loc[keep, "trial_id"])
    titles = [
        f"{key} (log)" if axis is not None and axis.scale == "log" else key
        for key, axis in zip(pair, axes, strict=True)
    ]
    fig.update_layout(height=460, width=720, xaxis_title=titles[0], yaxis_title=titles[1])
    return panel._replace(note=note, figures=(fig,))


def _top_pair(result: RunAnalysis) -> tuple[list[str], str]:
    """The two parameters ranked first by importance at its first fidelity (measured, above the
    noise), and a note when fewer than two are ranked (the next in the importance table, then
    in the space, fill the pair)."""
    searched = list(result.run.manifest.space.searched)
    if len(searched) < 2:
        return searched, "fewer than 2 parameters were searched: nothing to draw against each other"
    frame = result.importance if result.importance is not None and len(result.importance) else None
    ranked, order = [], []
    if frame is not None:
        epoch = frame["fidelity_epoch"].iloc[0]
        first = frame[frame["fidelity_epoch"] == epoch]
        measured = (
            first["importance_mean"].notna()
            & ~first["below_noise"].fillna(False).astype(bool)
            & first["note"].fillna("").eq("")
        )
        ranked = [p for p in first.loc[measured, "param"] if p in searched]
        order = [p for p in first["param"] if p in searched]
    pair = list(dict.fromkeys([*ranked, *order, *searched]))[:2]
    if len(ranked) >= 2:
        return pair, ""
    if frame is None:
        why = f"importance: {(result.notes or {}).get('importance', 'not computed')}"
        drawn = "the first two searched"
    else:
        reason = first["note"].fillna("").iloc[0]
        why = (
            f"importance: {reason}"
            if first["importance_mean"].isna().all() and reason
            else f"{len(ranked)} above the noise at epoch {epoch:g}"
        )
        drawn = "the first two in the importance table"
    return pair, (
        f"Fewer than 2 parameters are ranked ({why}): drawn are {pair[0]} and {pair[1]}, "
        f"{drawn}, which need not matter more than the others."
    )


def _mean_heatmap(plotly: Plotly, pair, axes, drawn, score: np.ndarray):
    """Two categorical parameters: the mean score of each pair of values, with its count."""
    frame = pd.DataFrame({"x": drawn[0], "y": drawn[1], "score": score})
    xs = _categories(axes[0], frame["x"])
    ys = _categories(axes[1], frame["y"])
    stats = frame.groupby(["y", "x"])["score"].agg(["mean", "count"])
    mean = stats["mean"].unstack().reindex(index=ys, columns=xs)
    count = stats["count"].unstack().reindex(index=ys, columns=xs)
    text = [
        [f"{m:.3f}<br>n={int(n)}" if n == n else "" for m, n in zip(r1, r2, strict=True)]
        for r1, r2 in zip(mean.to_numpy(), count.to_numpy(), strict=True)
    ]
    fig = plotly.go.Figure(
        plotly.go.Heatmap(
            z=mean.to_numpy(),
            x=xs,
            y=ys,
            text=text,
            texttemplate="%{text}",
            colorscale=_SCORE_SCALE,
            colorbar={"title": f"mean {config.VAL_MACRO_F1}", "tickformat": NUMBER_FORMAT},
            hovertemplate=f"{pair[0]}=%{{x}}<br>{pair[1]}=%{{y}}<br>mean %{{z:.4f}}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xs)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=ys)
    return fig


def _score_scatter(plotly: Plotly, pair, axes, drawn, score: np.ndarray, trial_ids):
    """Dots coloured by score; over a contour of the score where both parameters are numbers
    (a log-uniform one drawn on log10 with its real values as ticks)."""
    go = plotly.go
    placed = [
        np.log10(values) if axis is not None and axis.scale == "log" else values
        for axis, values in zip(axes, drawn, strict=True)
    ]
    fig = go.Figure()
    numeric = not any(_is_category(axis) for axis in axes)
    if numeric and all(len(np.unique(v)) > 1 for v in placed):
        # Scattered points: Plotly grids them by their distinct values and fills the gaps.
        fig.add_trace(
            go.Contour(
                x=placed[0],
                y=placed[1],
                z=score,
                connectgaps=True,
                coloraxis="coloraxis",
                opacity=0.55,
                line={"width": 0.5},
                hoverinfo="skip",
                name="contour",
            )
        )
    hover = [
        "%{customdata[0]}: %{marker.color:.4f}",
        *(f"{key}=%{{customdata[{i + 1}]}}" for i, key in enumerate(pair)),
    ]
    fig.add_trace(
        go.Scatter(
            x=placed[0],
            y=placed[1],
            mode="markers",
            marker={
                "color": score,
                "coloraxis": "coloraxis",
                "size": 11,
                "line": {"color": "white", "width": 1},
            },
            customdata=np.stack([np.asarray(trial_ids), *(_shown(v) for v in drawn)], axis=-1),
            hovertemplate="<br>".join(hover) + "<extra></extra>",
            name="trial",
            showlegend=False,
        )
    )
    fig.update_layout(
        coloraxis={
            "colorscale": _SCORE_SCALE,
            "colorbar": {"title": config.VAL_MACRO_F1, "tickformat": NUMBER_FORMAT},
        }
    )
    for axis, values, update in zip(
        axes, placed, (fig.update_xaxes, fig.update_yaxes), strict=True
    ):
        if _is_category(axis):
            update(type="category", categoryorder="array",
                   categoryarray=_categories(axis, pd.Series(values)))  # fmt: skip
        elif axis.scale == "log":
            ticks = _ticks(values)
            update(tickvals=ticks, ticktext=[f"{10**t:.3g}" for t in ticks])
        else:
            update(tickformat=NUMBER_FORMAT)
    return fig


def _shown(values: np.ndarray) -> list[str]:
    return [v if isinstance(v, str) else f"{float(v):.4g}" for v in values]
