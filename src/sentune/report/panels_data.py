"""Panels of the data and the model: token lengths, the data's splits and classes, the winner
on the validation split and the run's manifest."""

from __future__ import annotations

from sentune import config
from sentune.analysis import RunAnalysis
from sentune.report.panel import Panel, Plotly, table_html


def panel_tokens(result: RunAnalysis, plotly: Plotly) -> Panel:
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
    return panel._replace(figures=(fig,), html=(table_html(tokens.cuts, floats="{:.3f}"),))


def panel_data(result: RunAnalysis, plotly: Plotly) -> Panel:
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
    tables = "".join(table_html(t) for t in (summary.splits, summary.dropped, summary.facts))
    return panel._replace(note=note, figures=figures, html=(f"<div class='tables'>{tables}</div>",))


def panel_winner(result: RunAnalysis, plotly: Plotly) -> Panel:
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
        f"{config.VAL_MACRO_F1} {confusion.val_macro_f1:.4f} recomputed here."
    )
    return panel._replace(
        note=note,
        figures=(fig,),
        html=(table_html(confusion.per_class, floats="{:.3f}"),),
    )


def panel_manifest(result: RunAnalysis, plotly: Plotly) -> Panel:
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
        table_html(frame[section == name].rename(columns={"item": name}))
        for name in dict.fromkeys(section)
    )
    return panel._replace(html=(f"<div class='tables'>{tables}</div>",))
