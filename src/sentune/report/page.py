"""The report's page: every panel in order, laid out as one self-contained HTML file (Plotly,
no CDN) under a headline and a table of contents."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from sentune import config
from sentune.analysis import (
    BEST_SPACE_FILE,
    REPORT_FILE,
    STATUSES,
    RunAnalysis,
    tie_line,
    winner_id,
    winner_line,
)
from sentune.report.panel import Panel, import_plotly
from sentune.report.panels_data import panel_data, panel_manifest, panel_tokens, panel_winner
from sentune.report.panels_params import (
    panel_contour,
    panel_importance,
    panel_parallel,
    panel_slices,
)
from sentune.report.panels_trials import (
    panel_confirmation,
    panel_curves,
    panel_history,
    panel_latency,
    panel_leaderboard,
)
from sentune.report.sentences import verdict_line


def write_report(result: RunAnalysis, out_dir: str | Path) -> Path:
    """Write `<out_dir>/report.html`: a table of contents, then every panel of the run,
    plotly.js embedded once.

    Args:
        result: `analysis.analyze(run_dir)`.
        out_dir: `analysis/<run>`.

    Returns:
        The path of the report.
    """
    plotly = import_plotly()
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
    path = out_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(_page(result, _contents(panels) + "\n".join(body)), encoding="utf-8")
    tmp.replace(path)
    return path


def build_panels(result: RunAnalysis) -> list[Panel]:
    """Every panel of the report, in order (one builder per panel).

    Args:
        result: `analysis.analyze(run_dir)`.

    Returns:
        The panels; one whose data is missing carries a note saying why instead of a figure,
        one that does not apply to the run (latency in a run that measured none) is left out.
    """
    plotly = import_plotly()
    return [panel for build in _PANELS if (panel := build(result, plotly)) is not None]


def _contents(panels: list[Panel]) -> str:
    """The table of contents: one anchor per panel."""
    links = " ".join(f'<a href="#{p.id}">{html.escape(p.title)}</a>' for p in panels)
    return f"<nav class='toc'><b>Contents:</b> {links}</nav>\n"


def _compute_line(result: RunAnalysis) -> str:
    compute = result.compute
    if np.isnan(compute.trials_s):
        return "Compute time: not recorded."
    trials = f"{_duration(compute.trials_s)} of trial time"
    if compute.confirm_s > 0:
        searching = compute.trials_s - compute.confirm_s
        trials += (
            f" incl. the confirmation over seeds ({_duration(searching)} searching, "
            f"{_duration(compute.confirm_s)} confirming)"
        )
    return (
        f"Compute: {trials} in {_duration(compute.wall_s)} of wall time "
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
        f"{html.escape(_compute_line(result))}{_best_space_link(result)}</p>"
        f"<p class='caption'>{html.escape(manifest.space.description)}</p>"
        f"{body}</body></html>\n"
    )


def _best_space_link(result: RunAnalysis) -> str:
    """A link to `best.yaml` (written beside the report by `analysis.write_tables`)."""
    if winner_id(result.table, result.confirmation) is None:
        return ""
    return (
        f" <a href='{BEST_SPACE_FILE}'>{BEST_SPACE_FILE}</a>: the winner as a space file "
        f"(<code>sentune search analysis/{html.escape(result.run.path.name)}/{BEST_SPACE_FILE}"
        "</code> trains it again)."
    )


def _headline(result: RunAnalysis) -> str:
    table = result.table
    counts = table["status"].value_counts()
    parts = [f"{len(table)} trials"] + [f"{counts[s]} {s}" for s in STATUSES if s in counts]
    text = ", ".join(parts) + "."
    if result.verdict is not None:
        text = f"{verdict_line(result.verdict)} {text}"
    scored = table.dropna(subset=[config.VAL_MACRO_F1])
    if len(scored):
        best = scored.iloc[0]
        score = best[config.VAL_MACRO_F1]
        text += f" Best {config.VAL_MACRO_F1} {score:.4f} (trial {best['trial_id']})"
        if result.floor is not None:
            gap = best[config.VAL_MACRO_F1] - result.floor.val_macro_f1
            text += f"; TF-IDF floor {result.floor.val_macro_f1:.4f} ({gap:+.4f})"
        text += "."
    winner = winner_line(result.run, result.table, result.confirmation)
    if winner:
        text += f" The {winner[0].lower()}{winner[1:]}."
    tie = tie_line(result.confirmation)
    if tie:
        text += f" {tie[0].upper()}{tie[1:]}"
    return text


_PANELS = (
    panel_leaderboard,
    panel_confirmation,
    panel_latency,
    panel_importance,
    panel_contour,
    panel_parallel,
    panel_history,
    panel_curves,
    panel_slices,
    panel_tokens,
    panel_data,
    panel_winner,
    panel_manifest,
)
