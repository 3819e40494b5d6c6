"""The terminal: lines of at most `WIDTH` columns. The leaderboard as a table of its main columns
(every column is in `leaderboard.csv`), and the summary of a run's analysis: the top trials with
the floor's rank, the confirmed winner, the most important parameters and where the report is."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from sentune import config
from sentune.analysis import BEST_SPACE_FILE, RunAnalysis, tie_line, winner_id, winner_line
from sentune.report.sentences import confirmed_winner_line, counted, floor_note, verdict_line

#: Every line the command line prints fits this many columns (the search's progress too).
WIDTH = 120
#: A text cell of a table is cut to this many characters.
CELL_CHARS = 14
#: The leaderboard's columns in the terminal, before the searched parameters: `rank_score` only
#: where it differs from `val_macro_f1` somewhere (trials compared below the full budget).
SHOWN_COLUMNS = ["trial_id", config.VAL_MACRO_F1, "rank_score", "epochs", "status", "train_s"]
#: Decimals of a shown figure: scores 4, seconds 1; a searched value has 3 significant digits.
DECIMALS = {
    config.VAL_MACRO_F1: 4,
    "rank_score": 4,
    "mean": 4,
    "std": 4,
    "epochs": -1,  # as few as it needs (`2`, `1.5`)
    "train_s": 1,
}
_NUMBER = re.compile(r"-?[\d.]+(e-?\d+)?%?")


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with `…` where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit(text: str, width: int = WIDTH) -> str:
    """Each line of `text` that is wider than `width`, wrapped; its continuation lines indented
    two spaces past the line's own indent. Long words (paths) are not cut."""
    lines = []
    for line in text.splitlines():
        if len(line) <= width:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines += textwrap.wrap(
            line,
            width,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


# --- tables ------------------------------------------------------------------------------------


def format_cell(value, column: str = "") -> str:
    """A table cell: blank for a missing value, `DECIMALS[column]` decimals for a figure,
    3 significant digits for another float, text cut to `CELL_CHARS`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        decimals = DECIMALS.get(column)
        if decimals is None:
            return f"{value:.3g}"
        return f"{value:g}" if decimals < 0 else f"{value:.{decimals}f}"
    return clip(str(value), CELL_CHARS)


def column_cells(values, column: str = "") -> list[str]:
    """A column's cells (`format_cell`); floats without a fixed number of decimals get as many
    as the most precise of them shows with 3 significant digits (`0.100`, `0.336`)."""
    cells = [format_cell(v, column) for v in values]
    floats = [c for v, c in zip(values, cells, strict=True) if _is_float(v) and c]
    if column in DECIMALS or not floats or any("e" in c for c in floats):
        return cells
    decimals = max(len(c.partition(".")[2]) for c in floats)
    return [
        f"{v:.{decimals}f}" if _is_float(v) and c else c for v, c in zip(values, cells, strict=True)
    ]


def _is_float(value) -> bool:
    return isinstance(value, float) and not math.isnan(value)


def table_lines(cells: pd.DataFrame, *, headers: dict[str, str] | None = None) -> list[str]:
    """A frame of cell strings as aligned lines, two spaces between columns: numbers to the
    right, text to the left. `headers` renames columns for the header row."""
    headers = headers or {}
    columns = []
    for name in cells.columns:
        values = [str(v) for v in cells[name]]
        header = headers.get(name, str(name))
        width = max([len(header), *map(len, values)])
        numeric = any(values) and all(_NUMBER.fullmatch(v) for v in values if v)
        align = str.rjust if numeric else str.ljust
        columns.append([align(header, width)] + [align(v, width) for v in values])
    return ["  ".join(row).rstrip() for row in zip(*columns, strict=True)] if columns else []


def leaderboard_lines(table: pd.DataFrame, searched: list[str], *, width: int = WIDTH) -> list[str]:
    """The leaderboard in `width` columns: rank, `SHOWN_COLUMNS` and as many searched
    parameters as fit (headed by their last dotted part where that is unique), then what
    `rank_score` is (where shown) and which parameters were left out.

    Args:
        table: `analysis.leaderboard(run)`.
        searched: The searched keys (columns of `table`).
        width: The widest line.
    """
    base = [c for c in SHOWN_COLUMNS if c in table.columns]
    if "rank_score" in base and _same(table["rank_score"], table[config.VAL_MACRO_F1]):
        base.remove("rank_score")  # every trial was compared on its own score
    cells = pd.DataFrame({"#": [str(i + 1) for i in range(len(table))]})
    for column in base + searched:
        cells[column] = column_cells(table[column].tolist(), column)
    headers = short_names(searched)
    shown = len(base) + 1
    for count in range(len(searched), -1, -1):
        lines = table_lines(cells.iloc[:, : shown + count], headers=headers)
        if max(map(len, lines), default=0) <= width:
            break
    notes = []
    if "rank_score" in base:
        notes.append(
            "rank_score: what the order compares (the best epoch's score for trials that "
            "trained the full budget, f1@N for the others)"
        )
    left_out = searched[count:]
    if left_out:
        notes.append(f"not shown here: {', '.join(left_out)}")
    return lines + fit("\n".join(notes)).splitlines()


def _same(a: pd.Series, b: pd.Series) -> bool:
    a, b = a.astype(float).round(4), b.astype(float).round(4)
    return bool(((a == b) | (a.isna() & b.isna())).all())


def short_names(keys) -> dict[str, str]:
    """Each dotted key by its last part (`head.dropout` → `dropout`), or whole where two keys
    share that part."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {
        key: name if last.count(name) == 1 else key for key, name in zip(keys, last, strict=True)
    }


# --- the summary of an analysis ----------------------------------------------------------------


def summary(result: RunAnalysis, *, report: Path | None = None, top: int = 3) -> str:
    """A few lines for the terminal: the top trials and where the TF-IDF floor ranks (the
    leaderboard itself is `sentune leaderboard`'s), the confirmed winner, the most important
    parameters (with their spread) and where the report is."""
    lines = [_top_line(result, top), floor_note(result)]
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
            space = report.parent / BEST_SPACE_FILE
            lines += [
                f"the winner as a space file: {space}",
                f"train it again with: sentune search {space}",
            ]
    text = fit("\n".join(lines))
    if result.verdict is not None:
        # Whole, first: the report page's headline starts with the same sentence.
        text = f"{verdict_line(result.verdict)}\n{text}"
    return text


def _top_line(result: RunAnalysis, top: int) -> str:
    """`Top trials of <run> (...): a 0.7438, b 0.7401; the TF-IDF floor (0.6883) ranks after
    5 of 8 trials`."""
    board, floor_row = result.board
    trials = board if floor_row is None else board.drop(index=floor_row)
    scored = trials[trials[config.VAL_MACRO_F1].notna()].head(top)
    named = ", ".join(
        f"{row.trial_id} {getattr(row, config.VAL_MACRO_F1):.4f}" for row in scored.itertuples()
    )
    line = (
        f"Top trials of {result.run.path} (leaderboard order, best epoch's "
        f"{config.VAL_MACRO_F1}): {named or 'none scored'}"
    )
    if floor_row is not None:
        where = (
            f"after {floor_row} of {counted(len(trials), 'trial')}"
            if floor_row
            else "above every trial"
        )
        line += f"; the TF-IDF floor ({result.floor.val_macro_f1:.4f}) ranks {where}"
    return line


def _importance_line(result: RunAnalysis) -> str:
    """Per fidelity (the lowest common rung first): the parameters above the noise, or that none
    is."""
    frame = result.importance
    if frame is None:
        return f"importance: {result.notes.get('importance', 'not computed')}"
    if frame["importance_mean"].isna().all():
        return "importance: " + "; ".join(n for n in frame["note"].unique() if n)
    parts = []
    for epoch, rows in frame.groupby("fidelity_epoch", sort=False):
        ranked = rows[rows["note"] == ""].head(3)
        items = (
            ", ".join(
                f"{r.param} {r.importance_mean:.2f} [{r.low:.2f}-{r.high:.2f}]"
                for r in ranked.itertuples()
            )
            or "no parameter above the noise"
        )
        trials = counted(int(rows["n_trials"].max()), "trial")
        parts.append(f"at epoch {epoch:g} ({trials}): {items}")
    return "importance (fANOVA, mean [5-95%]; below the noise left out) " + "; ".join(parts)
