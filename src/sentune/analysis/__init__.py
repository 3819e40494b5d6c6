"""A run read into plain data: the leaderboard, learning curves, parameter importance, token
lengths and summaries. No figures (`sentune.report` draws them) and no model runs (`evaluate.py`
scores the floor and the winner; `analyze` gathers everything the report shows).

Reads the run through `runs.py`, so it works on a finished, interrupted or still-running search
without the search process or Ray. One module per job:

- `ranking`: the leaderboard at equal fidelity, its statuses and ASHA's rungs, the board as shown;
- `confirm`: the confirmation over seeds (its plan, its scores, the winner);
- `tradeoff`: macro-F1 against p95 latency (the Pareto front);
- `curves`: learning curves, the optimization history, compute time;
- `params`: the searched parameters and how each is drawn;
- `facts`: the floor verdict, token lengths, the winner's confusion, data and manifest summaries;
- `importance`: fANOVA importance at equal fidelity;
- here: `analyze` (every part at once, as `RunAnalysis`) and `write_tables`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sentune import config, runs
from sentune.analysis.confirm import (
    CONFIRM_COLUMNS,
    CONFIRM_CONFIG_COLUMNS,
    Confirmation,
    ConfirmItem,
    confirmation,
    confirmation_plan,
    format_mean_std,
)
from sentune.analysis.curves import (
    ComputeTime,
    History,
    compute_time,
    learning_curves,
    optimization_history,
    whole_epochs,
)
from sentune.analysis.facts import (
    FLOOR_CAUSES,
    SMALL_TRAIN_SIZE,
    DataSummary,
    FloorVerdict,
    TokenLengths,
    data_summary,
    floor_verdict,
    manifest_summary,
    token_lengths,
    trial_max_length,
    trial_truncation,
    winner_confusion,
)
from sentune.analysis.importance import parameter_importance
from sentune.analysis.params import (
    ParamAxis,
    param_axes,
    param_values,
    params_or_observed,
    search_params,
    value_label,
)
from sentune.analysis.ranking import (
    BOARD_COLUMNS,
    COMPLETED,
    EPOCH_SCORE_PREFIX,
    ERROR,
    FLOOR_LABEL,
    LEADERBOARD_COLUMNS,
    RANK_COLUMNS,
    RANKING_RULE,
    STATUSES,
    STOPPED,
    UNFINISHED,
    Board,
    asha_rungs,
    board_with_floor,
    epoch_score_column,
    leaderboard,
)
from sentune.analysis.tradeoff import (
    PARETO_COLUMNS,
    Pareto,
    choose_under_budget,
    pareto,
    pareto_front,
)
from sentune.analysis.winner import (
    BEST_SPACE_FILE,
    best_space,
    configuration_words,
    searched_values,
    tie_line,
    winner_id,
    winner_line,
    write_best_space,
)
from sentune.runs import Run, open_run

if TYPE_CHECKING:
    from sentune.train.evaluate import Confusion, Floor

__all__ = [
    "BEST_SPACE_FILE",
    "best_space",
    "configuration_words",
    "searched_values",
    "tie_line",
    "winner_id",
    "winner_line",
    "write_best_space",
    "BOARD_COLUMNS",
    "COMPLETED",
    "ERROR",
    "STATUSES",
    "STOPPED",
    "UNFINISHED",
    "CONFIRM_COLUMNS",
    "CONFIRM_CONFIG_COLUMNS",
    "CONFIRM_FILE",
    "EPOCH_SCORE_PREFIX",
    "IMPORTANCE_FILE",
    "FLOOR_CAUSES",
    "FLOOR_FILE",
    "FLOOR_LABEL",
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_FILE",
    "PARETO_COLUMNS",
    "PARETO_FILE",
    "RANKING_RULE",
    "RANK_COLUMNS",
    "REPORT_FILE",
    "SCREENSHOT_FILE",
    "SMALL_TRAIN_SIZE",
    "Board",
    "ComputeTime",
    "ConfirmItem",
    "Confirmation",
    "DataSummary",
    "FloorVerdict",
    "History",
    "ParamAxis",
    "Pareto",
    "RunAnalysis",
    "TokenLengths",
    "analyze",
    "asha_rungs",
    "board_with_floor",
    "choose_under_budget",
    "compute_time",
    "confirmation",
    "confirmation_plan",
    "data_summary",
    "epoch_score_column",
    "floor_verdict",
    "format_mean_std",
    "leaderboard",
    "learning_curves",
    "manifest_summary",
    "optimization_history",
    "param_axes",
    "param_values",
    "parameter_importance",
    "params_or_observed",
    "pareto",
    "pareto_front",
    "search_params",
    "token_lengths",
    "trial_max_length",
    "trial_truncation",
    "value_label",
    "whole_epochs",
    "winner_confusion",
    "write_tables",
]

log = logging.getLogger(__name__)

# --- the files of analysis/<run>/ (the export's own folder is named by `sentune.export`) --------

#: Shuffles of the scores for importance's noise level (`parameter_importance`), per bootstrap
#: resample of its spread (30 at the default 10 resamples), and never fewer than
#: `MIN_PERMUTATIONS`: a quantile of a handful of shuffles says little.
PERMUTATIONS_PER_BOOTSTRAP = 3
MIN_PERMUTATIONS = 10
#: The leaderboard (`leaderboard`), one row per trial, best first.
LEADERBOARD_FILE = "leaderboard.csv"
#: Parameter importance (`parameter_importance`).
IMPORTANCE_FILE = "importance.csv"
#: The confirmation over seeds (`Confirmation.table`).
CONFIRM_FILE = "confirm.csv"
#: The accuracy-latency table of a run, beside its leaderboard.
PARETO_FILE = "pareto.csv"
#: The TF-IDF floor (`evaluate.Floor`).
FLOOR_FILE = "floor.json"
#: The HTML report (`sentune.report.write_report`) and its screenshot (`sentune report
#: --screenshot`).
REPORT_FILE = "report.html"
SCREENSHOT_FILE = "report.png"


@dataclass
class RunAnalysis:
    """Everything the report shows, as data. A part that could not be computed is None and
    `notes[part]` says why (the report shows the note in its place)."""

    run: Run
    table: pd.DataFrame
    curves: pd.DataFrame
    history: History
    rungs: list[float]
    importance: pd.DataFrame | None = None
    floor: Floor | None = None
    #: Set when the floor matches or beats the best trial.
    verdict: FloorVerdict | None = None
    tokens: TokenLengths | None = None
    confusion: Confusion | None = None
    data: DataSummary | None = None
    manifest: pd.DataFrame | None = None
    notes: dict[str, str] | None = None
    #: How each searched parameter is drawn (`param_axes`).
    axes: dict[str, ParamAxis] = field(default_factory=dict)
    #: Each trial's searched values as drawn (`param_values`), leaderboard order.
    param_values: pd.DataFrame | None = None
    #: Trial time and wall time of the search and its confirmation (`compute_time`).
    compute: ComputeTime = ComputeTime(float("nan"), float("nan"))
    #: Every evaluation at a whole epoch (`whole_epochs`).
    whole_epochs: bool = True
    #: The top configurations over seeds and the winner (`confirmation`); None when off.
    confirmation: Confirmation | None = None
    #: Macro-F1 against p95 latency (`pareto`); None when the trials measured no latency.
    pareto: Pareto | None = None

    @property
    def board(self) -> Board:
        """The leaderboard as shown, with the floor at its rank (`board_with_floor`)."""
        return board_with_floor(self.table, self.run.manifest.space.searched, self.floor)


def analyze(
    run_dir: str | Path,
    *,
    cache_dir: str | Path = config.CACHE_DIR,
    seeds: int = 3,
    bootstraps: int = 10,
    with_data: bool = True,
) -> RunAnalysis:
    """Read a run and compute every part of its report.

    Args:
        run_dir: `trials/<run>`.
        cache_dir: The token cache shared with `search` (the splits are rebuilt from the
            manifest for the floor, the token lengths and the winner's confusion matrix).
        seeds, bootstraps: Spread of the importance (see `parameter_importance`).
        with_data: False skips the parts that rebuild the data (floor, lengths, confusion).

    Returns:
        A `RunAnalysis`; parts that fail (a moved dataset, a missing checkpoint) are None with
        a note, so a report of what exists is always possible.
    """
    run = open_run(run_dir)
    table = leaderboard(run)
    curves = learning_curves(run)
    params = params_or_observed(run)
    axes = param_axes(params)
    result = RunAnalysis(
        run=run,
        table=table,
        curves=curves,
        history=optimization_history(table, curves),
        rungs=asha_rungs(run.manifest.budget, run.manifest.strategy),
        notes={},
        axes=axes,
        param_values=param_values(table, axes),
        compute=compute_time(
            curves, None if run.confirmation is None else learning_curves(run.confirmation)
        ),
        whole_epochs=whole_epochs(curves),
    )
    result.confirmation = _part(result, "confirmation", confirmation, run, table)
    result.pareto = _part(result, "pareto", pareto, run, table)
    result.data = _part(result, "data", data_summary, run.manifest)
    result.manifest = _part(result, "manifest", manifest_summary, run.manifest, params=params)
    result.importance = _part(
        result,
        "importance",
        parameter_importance,
        run,
        curves,
        params,
        seeds=seeds,
        bootstraps=bootstraps,
        # The noise level is as costly as the importance's own spread, and as fine as it.
        permutations=max(MIN_PERMUTATIONS, PERMUTATIONS_PER_BOOTSTRAP * bootstraps),
    )
    if not with_data:
        for part in ("floor", "tokens", "confusion"):
            result.notes[part] = "skipped (the data was not rebuilt)"
        return result
    from sentune.train.evaluate import reference_floor

    data = _part(
        result, "floor", runs.load_data, run.manifest, cache_dir=cache_dir, allow_changed=True
    )
    if data is None:
        for part in ("tokens", "confusion"):
            result.notes[part] = result.notes["floor"]
        return result
    recorded = run.manifest.data.fingerprint
    result.floor = _part(result, "floor", reference_floor, data, recorded_fingerprint=recorded)
    result.tokens = _part(result, "tokens", token_lengths, data, run.manifest)
    result.verdict = _part(
        result, "verdict", floor_verdict, run, table, result.floor, result.tokens
    )
    result.confusion = _part(
        result, "confusion", winner_confusion, table, data, run, result.confirmation
    )
    if result.confusion is None and "confusion" not in result.notes:
        result.notes["confusion"] = "no trial has a checkpoint yet"
    return result


def _part(result: RunAnalysis, name: str, compute, *args, **kwargs):
    """One optional part of the analysis: its value, or None and a note on why it failed."""
    try:
        return compute(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failed panel must not lose the report
        log.warning("report part %r failed: %s: %s", name, type(exc).__name__, exc)
        result.notes[name] = f"not available ({type(exc).__name__}: {exc})"
        return None


def write_tables(result: RunAnalysis, out_dir: str | Path) -> dict[str, Path]:
    """Write `leaderboard.csv` and `importance.csv` (and `confirm.csv`, `pareto.csv`,
    `floor.json`, and the winner as a space file, `best.yaml`) into `out_dir`, each whole or not
    at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"leaderboard": runs.write_csv(result.table, out_dir / LEADERBOARD_FILE)}
    if result.importance is not None:
        written["importance"] = runs.write_csv(result.importance, out_dir / IMPORTANCE_FILE)
    if result.confirmation is not None:
        written["confirm"] = runs.write_csv(result.confirmation.table, out_dir / CONFIRM_FILE)
    if result.pareto is not None:
        written["pareto"] = runs.write_csv(result.pareto.table, out_dir / PARETO_FILE)
    if result.floor is not None:
        written["floor"] = runs.write_json(out_dir / FLOOR_FILE, result.floor._asdict())
    winner = winner_id(result.table, result.confirmation)
    if winner is not None:
        written["best"] = out_dir / BEST_SPACE_FILE
        write_best_space(result.run, winner, written["best"])
    return written
