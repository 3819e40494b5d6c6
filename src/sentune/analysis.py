"""Read a run folder into plain data: the manifest, per-trial histories and the leaderboard.

Reads only files (Tune's `result.json` and `params.json` per trial, and sentune's manifest), so
it works on a finished, interrupted or still-running search without the search process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sentune import config
from sentune.errors import RunError
from sentune.search import MANIFEST

#: Leaderboard columns before the searched parameters (DESIGN.md contract, then extras).
LEADERBOARD_COLUMNS = [
    "trial_id",
    config.OBJECTIVE,
    "best_epoch",
    "epochs",
    "stopped_early",
    "status",
    "train_s",
    config.TRAIN_SAMPLES_PER_S,
    config.VAL_F1_WEIGHTED,
    config.VAL_ACCURACY,
    config.VAL_LOSS,
    "checkpoint",
    "error",
]


@dataclass(frozen=True)
class Run:
    """A run folder read back: its manifest and one history DataFrame per trial."""

    path: Path
    manifest: dict[str, Any]
    params: dict[str, dict[str, Any]]
    histories: dict[str, pd.DataFrame]
    errors: dict[str, str]


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder written by `search.run`.

    Args:
        run_dir: `trials/<space>-<timestamp>`.

    Returns:
        The manifest, each trial's parameters, per-evaluation history and error (if any).
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.is_file():
        raise RunError(f"{run_dir}: not a sentune run (no {MANIFEST}); pass a trials/<run> folder")
    manifest = json.loads(manifest_path.read_text())
    params, histories, errors = {}, {}, {}
    for trial_dir in sorted(p for p in run_dir.iterdir() if (p / "params.json").is_file()):
        trial_id = trial_dir.name
        params[trial_id] = json.loads((trial_dir / "params.json").read_text())
        histories[trial_id] = _read_results(trial_dir / "result.json")
        error = trial_dir / "error.txt"
        if error.is_file():
            lines = error.read_text().strip().splitlines()
            errors[trial_id] = lines[-1] if lines else "failed"
    return Run(run_dir, manifest, params, histories, errors)


def _read_results(path: Path) -> pd.DataFrame:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends the readable history
    return pd.DataFrame(rows)


def leaderboard(run: Run) -> pd.DataFrame:
    """One row per trial, best first, scored by its best evaluation's validation macro-F1.

    Columns: those of `LEADERBOARD_COLUMNS`, then one per searched parameter (dotted key).
    """
    searched = run.manifest["space"]["searched"]
    max_epochs = run.manifest["budget"]["max_epochs"]
    rows = []
    for trial_id, params in run.params.items():
        history = run.histories.get(trial_id, pd.DataFrame())
        row: dict[str, Any] = {"trial_id": trial_id, "error": run.errors.get(trial_id, "")}
        if config.OBJECTIVE in history:
            best = history.loc[history[config.OBJECTIVE].idxmax()]
            epochs = float(history[config.EPOCH].max())
            row.update(
                {
                    config.OBJECTIVE: best[config.OBJECTIVE],
                    "best_epoch": best[config.EPOCH],
                    "epochs": epochs,
                    "train_s": float(history["train_s"].max()),
                    config.TRAIN_SAMPLES_PER_S: float(history[config.TRAIN_SAMPLES_PER_S].mean()),
                    config.VAL_F1_WEIGHTED: best[config.VAL_F1_WEIGHTED],
                    config.VAL_ACCURACY: best[config.VAL_ACCURACY],
                    config.VAL_LOSS: best[config.VAL_LOSS],
                }
            )
        else:
            row.update({"epochs": 0.0})
        done = row["epochs"] >= max_epochs
        row["status"] = "error" if row["error"] else ("completed" if done else "stopped")
        row["stopped_early"] = row["status"] == "stopped"
        row["checkpoint"] = _checkpoint(run.path / trial_id)
        row.update({key: params.get(key) for key in searched})
        rows.append(row)
    table = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS + list(searched))
    return table.sort_values(
        config.OBJECTIVE, ascending=False, na_position="last", kind="stable"
    ).reset_index(drop=True)


def _checkpoint(trial_dir: Path) -> str:
    kept = sorted(trial_dir.glob("checkpoint_*"))
    return str(kept[-1]) if kept else ""
