"""The leaderboard: one row per trial, ranked at equal fidelity, and the board as shown.

Its columns and statuses, ASHA's rungs, the ranking rule (`RANKING_RULE`), and the board the
report and the terminal show with the TF-IDF floor at its rank. (Named `ranking`, not
`leaderboard`: a module named like the function the package exports would be shadowed by it.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sentune import config, runs
from sentune.runs import Run

if TYPE_CHECKING:
    from sentune.train.evaluate import Floor

#: A trial's `status` in the leaderboard: it trained the full epoch budget, ASHA stopped it, it
#: failed, or it is still running (or the search was killed). Not the driver's record of a trial
#: (`runs.COMPLETED`, …), where a trial ASHA stopped has completed too.
COMPLETED, STOPPED, ERROR, UNFINISHED = "completed", "stopped", "error", "unfinished"
#: Every leaderboard status, in the order the report counts them.
STATUSES = (COMPLETED, STOPPED, UNFINISHED, ERROR)

#: Leaderboard columns before the searched parameters (DESIGN.md contract, then extras).
LEADERBOARD_COLUMNS = [
    "trial_id",
    config.VAL_MACRO_F1,
    "best_epoch",
    "epochs",
    "stopped_early",
    "status",
    "rung",
    "train_s",
    config.TRAIN_SAMPLES_PER_S,
    config.VAL_F1_WEIGHTED,
    config.VAL_ACCURACY,
    config.VAL_LOSS,
    "checkpoint",
    "error",
]


def asha_rungs(budget: config.BudgetConfig, strategy: str) -> list[float]:
    """The epochs at which ASHA compares trials (its rungs), ending with `max_epochs`.

    Ray's `ASHAScheduler` puts rungs at `grace_period * reduction_factor**k` up to `max_epochs`;
    a FIFO strategy has no rung before the last epoch.
    """
    max_epochs = float(budget.max_epochs)
    if strategy.endswith("fifo"):
        return [max_epochs]
    grace, factor = float(budget.grace_period), float(budget.reduction_factor)
    count = int(math.log(max_epochs / grace) / math.log(factor) + 1)
    rungs = [grace * factor**k for k in range(count)]
    return sorted({r for r in rungs if r < max_epochs} | {max_epochs})


#: How the leaderboard orders trials (shown in the report), as one sentence.
RANKING_RULE = (
    "Trials trained for the full epoch budget come first, ranked by their best epoch's score; "
    "the others follow, ranked by their score at the highest epoch they all reached (f1@N), "
    "so no score is compared with one from a longer training."
)
#: What each trial was compared on: the epoch and its score there.
RANK_COLUMNS = ["rank_epoch", "rank_score"]
#: Per-epoch score columns of the leaderboard: `f1@1`, `f1@2`, … (blank where not reached).
EPOCH_SCORE_PREFIX = "f1@"


def epoch_score_column(epoch: float) -> str:
    """The leaderboard column holding each trial's score at `epoch` (`f1@2`)."""
    return f"{EPOCH_SCORE_PREFIX}{epoch:g}"


def leaderboard(run: Run) -> pd.DataFrame:
    """One row per trial, best first at equal fidelity (see `RANKING_RULE`).

    A trial's `val_macro_f1` is its best epoch's score; the order compares trials that trained
    equally long: those that reached `budget.max_epochs` by that score, then the others by their
    score at the highest epoch all of them reached (`rank_epoch`, `rank_score`). ASHA promotes
    whichever trial meets a rung unopposed (the first ones when trials run one at a time), so
    ranking best-of-3-epochs against best-of-1 would crown the trial order.

    Columns: those of `LEADERBOARD_COLUMNS`, then `f1@<epoch>` for every epoch evaluated (blank
    where a trial did not get there), then one per searched parameter (dotted key; blank where
    the parameter was inactive). `status` is `completed` (trained every epoch), `stopped` (ASHA
    stopped it), `error` or `unfinished` (running, or the search was killed); `rung` is the last
    ASHA rung it reached (an epoch count, 0 before the first).
    """
    searched = run.manifest.space.searched
    max_epochs = run.manifest.budget.max_epochs
    rungs = asha_rungs(run.manifest.budget, run.manifest.strategy)
    rows, by_epoch = [], {}
    for trial_id, params in run.params.items():
        history = run.histories.get(trial_id, pd.DataFrame())
        row: dict[str, Any] = {"trial_id": trial_id, "error": run.errors.get(trial_id, "")}
        done = False
        if config.VAL_MACRO_F1 in history and len(history):
            best = history.loc[history[config.VAL_MACRO_F1].idxmax()]
            epochs = float(history[config.EPOCH].max())
            done = bool(history["done"].iloc[-1]) if "done" in history else False
            row.update(
                {
                    config.VAL_MACRO_F1: best[config.VAL_MACRO_F1],
                    "best_epoch": best[config.EPOCH],
                    "epochs": epochs,
                    "train_s": _column_max(history, "train_s"),
                    config.TRAIN_SAMPLES_PER_S: _column_mean(history, config.TRAIN_SAMPLES_PER_S),
                    config.VAL_F1_WEIGHTED: best.get(config.VAL_F1_WEIGHTED),
                    config.VAL_ACCURACY: best.get(config.VAL_ACCURACY),
                    config.VAL_LOSS: best.get(config.VAL_LOSS),
                }
            )
            # A trial retried from its checkpoint reports some epochs again: the last counts.
            by_epoch[trial_id] = history.groupby(config.EPOCH)[config.VAL_MACRO_F1].last()
        else:
            row.update({"epochs": 0.0})
        if row["error"]:
            row["status"] = ERROR
        elif row["epochs"] >= max_epochs:
            row["status"] = COMPLETED
        else:
            row["status"] = STOPPED if done else UNFINISHED
        row["stopped_early"] = row["status"] == STOPPED
        row["rung"] = max((r for r in rungs if r <= row["epochs"]), default=0.0)
        best_checkpoint = runs.best_checkpoint(run.trial_dir(trial_id))
        row["checkpoint"] = str(best_checkpoint) if best_checkpoint else ""
        row.update({key: params.get(key) for key in searched})
        rows.append(row)
    epochs = sorted({float(e) for scores in by_epoch.values() for e in scores.index})
    score_columns = [epoch_score_column(e) for e in epochs]
    table = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS + list(searched))
    table["rank_epoch"], table["rank_score"] = np.nan, np.nan
    for epoch, column in zip(epochs, score_columns, strict=True):
        table[column] = [
            by_epoch[t].get(epoch, np.nan) if t in by_epoch else np.nan for t in table["trial_id"]
        ]
    table = table[LEADERBOARD_COLUMNS + RANK_COLUMNS + score_columns + list(searched)]
    return _rank_at_equal_fidelity(table, by_epoch, max_epochs)


def _rank_at_equal_fidelity(
    table: pd.DataFrame, by_epoch: dict[str, pd.Series], max_epochs: float
) -> pd.DataFrame:
    """Order `table` by `RANKING_RULE`, filling `rank_epoch` and `rank_score` (what each trial
    was compared on)."""
    scored = table[config.VAL_MACRO_F1].notna()
    full = scored & (table["epochs"] >= max_epochs)
    others = scored & ~full
    table.loc[full, "rank_epoch"] = table.loc[full, "epochs"]
    table.loc[full, "rank_score"] = table.loc[full, config.VAL_MACRO_F1]
    if others.any():
        common = float(table.loc[others, "epochs"].min())
        # The score AT the common epoch; a trial evaluated between epochs (eval_every_steps)
        # but not exactly there counts its last evaluation before it.
        table.loc[others, "rank_epoch"] = common
        table.loc[others, "rank_score"] = [
            _score_at(by_epoch[t], common) for t in table.loc[others, "trial_id"]
        ]
    table["_tier"] = np.select([full, others], [0, 1], 2)
    # Ties keep the longer-trained, then the better best-epoch trial first.
    return (
        table.sort_values(
            ["_tier", "rank_score", "epochs", config.VAL_MACRO_F1],
            ascending=[True, False, False, False],
            na_position="last",
            kind="stable",
        )
        .drop(columns="_tier")
        .reset_index(drop=True)
    )


def _score_at(scores: pd.Series, epoch: float) -> float:
    """The last score reported at or before `epoch` (NaN when none was)."""
    before = scores[scores.index <= epoch]
    return float(before.iloc[-1]) if len(before) else float("nan")


def _column_max(history: pd.DataFrame, column: str) -> float:
    return float(history[column].max()) if column in history else float("nan")


def _column_mean(history: pd.DataFrame, column: str) -> float:
    return float(history[column].mean()) if column in history else float("nan")


class Board(NamedTuple):
    """The leaderboard as shown: its main columns, with the TF-IDF floor as a row at its rank."""

    #: The shown columns of `leaderboard`, the floor's row (`trial_id` "TF-IDF floor") inserted.
    table: pd.DataFrame
    #: The floor's row position in `table` (None: no floor).
    floor_row: int | None


#: The leaderboard's columns the report and the terminal show, before the searched parameters.
BOARD_COLUMNS = [
    "trial_id",
    config.VAL_MACRO_F1,
    "best_epoch",
    "epochs",
    "status",
    "rung",
    "train_s",
    config.TRAIN_SAMPLES_PER_S,
]
FLOOR_LABEL = "TF-IDF floor"


def board_with_floor(table: pd.DataFrame, searched: list[str], floor: Floor | None) -> Board:
    """The leaderboard's shown columns with the floor ranked among the trials.

    Args:
        table: `leaderboard(run)`.
        searched: The searched keys (their columns follow `BOARD_COLUMNS`).
        floor: The TF-IDF floor, or None.

    Returns:
        A `Board`: the floor sits before the first trial, in leaderboard order, whose score is
        below it (the leaderboard ranks at equal fidelity, so scores need not fall steadily);
        trials that tie with the floor rank above it.
    """
    shown = table[BOARD_COLUMNS + list(searched)].copy()
    if floor is None:
        return Board(shown, None)
    below = (shown[config.VAL_MACRO_F1] < floor.val_macro_f1).to_numpy()
    rank = int(below.argmax()) if below.any() else len(shown)
    row = pd.DataFrame([{"trial_id": FLOOR_LABEL, config.VAL_MACRO_F1: floor.val_macro_f1}])
    shown = pd.concat([shown.iloc[:rank], row, shown.iloc[rank:]], ignore_index=True)
    return Board(shown, rank)
