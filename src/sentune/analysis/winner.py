"""The winner as words and as a file: its configuration (every searched key = value),
`best.yaml` (a space file that trains it again), and how sure the choice is (a tie within the
seed noise is said as one).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import yaml

from sentune import config, runs
from sentune.analysis.confirm import Confirmation
from sentune.runs import Run

#: The winner's configuration as a space file, in `analysis/<run>/`.
BEST_SPACE_FILE = "best.yaml"


def winner_id(table: pd.DataFrame, confirmed: Confirmation | None) -> str | None:
    """The winning trial: the best mean over seeds, else the leaderboard's best scored trial."""
    if confirmed is not None and confirmed.winner is not None:
        return str(confirmed.winner)
    scored = table.dropna(subset=[config.VAL_MACRO_F1])
    return None if scored.empty else str(scored.iloc[0]["trial_id"])


def searched_values(run: Run, trial_id: str) -> dict[str, Any]:
    """The searched keys the trial used, in the space's order (a conditional key the trial never
    used, such as `head.width` with no hidden layer, is left out)."""
    params = run.params[trial_id]
    return {key: params[key] for key in run.manifest.space.searched if key in params}


def configuration_words(values: dict[str, Any]) -> str:
    """`head.pooling = mean, head.layers = 0, head.dropout = 0.358`."""
    return ", ".join(f"{key} = {_value(v)}" for key, v in values.items()) or "nothing searched"


def winner_line(run: Run, table: pd.DataFrame, confirmed: Confirmation | None) -> str:
    """`winner's configuration (trial X): head.pooling = mean, …` (empty when no trial has a
    score)."""
    trial = winner_id(table, confirmed)
    if trial is None:
        return ""
    words = configuration_words(searched_values(run, trial))
    return f"winner's configuration (trial {trial}): {words}"


def best_space(run: Run, trial_id: str) -> str:
    """`best.yaml`: the run's space with the trial's values under `fixed:` and nothing searched
    (model and data as the run's; the budget as the run's, with one trial), so that
    `sentune search analysis/<run>/best.yaml` trains the configuration again."""
    manifest = run.manifest
    original = yaml.safe_load(manifest.space.text) or {}
    params = run.params[trial_id]
    fixed = {k: params[k] for k in sorted(params) if "." in k and k.split(".")[0] in _TUNABLE}
    space: dict[str, Any] = {
        "description": (
            f"The winner of run {manifest.run} (space {manifest.space.name}, trial {trial_id}): "
            f"{configuration_words(searched_values(run, trial_id))}. Everything fixed; the "
            "confirmation over seeds (budget.confirm_seeds) retrains it with other seeds."
        ),
        "model": original.get("model", manifest.model),
    }
    for section in ("data", "objective", "objectives"):
        if section in original:
            space[section] = original[section]
    space["budget"] = {**(original.get("budget") or {}), "trials": 1}
    space["fixed"] = fixed
    header = (
        f"# Written by sentune from {manifest.run}: `sentune search <this file>` trains trial "
        f"{trial_id}'s configuration again.\n"
    )
    return header + yaml.safe_dump(space, sort_keys=False, allow_unicode=True, width=100)


_TUNABLE = tuple(config.TUNABLE_SECTIONS)


def tie_line(confirmed: Confirmation | None) -> str:
    """How sure the winner is: when the top two confirmed configurations are within the seed
    noise (their mean ± std overlap, or the gap is under the larger std), they are called tied
    and the rule that took the first is said; two seeds are said to be few. Empty without a
    confirmation of two configurations or more."""
    if confirmed is None or confirmed.winner is None or len(confirmed.configs) < 2:
        return ""
    first, second = confirmed.configs.iloc[0], confirmed.configs.iloc[1]
    if pd.isna(second["mean"]):
        return ""
    gap = float(first["mean"] - second["mean"])
    stds = [float(s) for s in (first["std"], second["std"]) if not pd.isna(s)]
    noise = max(stds) if stds else math.nan
    seeds = int(min(first["n_seeds"], second["n_seeds"]))
    few = (
        f" With {seeds} seeds per configuration the spread itself is rough; more seeds "
        "(budget.confirm_seeds) would separate them better."
        if seeds <= 2
        else ""
    )
    overlap = not math.isnan(noise) and first["mean"] - first.get("std", 0) <= second[
        "mean"
    ] + second.get("std", 0)
    if math.isnan(noise) or not (overlap or gap < noise):
        return (
            f"trial {first['trial_id']} leads trial {second['trial_id']} by {gap:.4f} mean "
            f"{config.VAL_MACRO_F1}, more than the seed spread ({noise:.4f}).{few}"
        ).replace("(nan)", "(n/a)")
    return (
        f"tied: trials {first['trial_id']} and {second['trial_id']} are within the seed noise "
        f"(mean {first['mean']:.4f} ± {first['std']:.4f} against {second['mean']:.4f} ± "
        f"{second['std']:.4f}; gap {gap:.4f}); {first['trial_id']} was taken for the better "
        f"mean, which this gap does not establish.{few}"
    )


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_best_space(run: Run, trial_id: str, path) -> None:
    """Write `best_space` to `path` whole (`runs.write_text`)."""
    runs.write_text(path, best_space(run, trial_id))
