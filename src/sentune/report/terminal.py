"""The terminal summary of a run's analysis: the top trials with the floor at its rank, the
confirmed winner, the most important parameters and where the report is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sentune import config
from sentune.analysis import BEST_SPACE_FILE, RunAnalysis, tie_line, winner_id, winner_line
from sentune.report.sentences import confirmed_winner_line, floor_note, verdict_line


def summary(result: RunAnalysis, *, report: Path | None = None, top: int = 5) -> str:
    """A few lines for the terminal: top trials with the floor at its rank, the most important
    parameters (with their spread) and where the report is."""
    shown, rank = result.board
    if rank is not None and rank > top:
        # The floor's row, after the top trials.
        shown = pd.concat([shown.head(top), shown.iloc[[rank]]], ignore_index=True)
    else:
        shown = shown.head(top + (rank is not None))
    lines = [f"Top trials of {result.run.path} (best epoch's {config.VAL_MACRO_F1}):"]
    if result.verdict is not None:
        lines.insert(0, verdict_line(result.verdict))
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        lines.append(shown.to_string(index=False, na_rep=""))
    lines.append(floor_note(result))
    winner = confirmed_winner_line(result)
    if winner:
        lines.append(winner)
    lines += [
        line
        for line in (
            winner_line(result.run, result.table, result.confirmation),
            tie_line(result.confirmation),
        )
        if line
    ]
    lines.append(_importance_line(result))
    for part in ("confusion", "tokens"):
        if part in result.notes:
            lines.append(f"{part}: {result.notes[part]}")
    if report is not None:
        lines.append(f"report: {report}")
        if winner_id(result.table, result.confirmation) is not None:
            lines.append(
                f"the winner as a space file: {report.parent / BEST_SPACE_FILE} "
                f"(sentune search {report.parent / BEST_SPACE_FILE} trains it again)"
            )
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
