"""The searched parameters: their distributions from the run's space, and how each is drawn in
every panel (`ParamAxis`), decided by its distribution rather than by the values trials took.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sentune.runs import Manifest, Run

if TYPE_CHECKING:
    from sentune.space import Param

log = logging.getLogger(__name__)


def search_params(manifest: Manifest) -> dict[str, Param]:
    """The searched parameters of a run and their distributions, parsed from the manifest's copy
    of the space file (restricted to the keys the run actually searched); max_length quantiles
    are the choice the run resolved them to (the manifest's `max_length` entry)."""
    from sentune import space

    searched = manifest.space.searched
    with tempfile.TemporaryDirectory(prefix="sentune-space-") as folder:
        path = Path(folder) / f"{manifest.space.name}.yaml"
        path.write_text(manifest.space.text)
        spec = space.load(path)
    params = {key: spec.params[key] for key in searched if key in spec.params}
    key = space.MAX_LENGTH_KEY
    if key in params and params[key].kind == "quantiles":
        params[key] = space.Param("choice", tuple((manifest.max_length or {})["values"]))
    return params


class ParamAxis(NamedTuple):
    """How one searched parameter is drawn in every panel, decided by its distribution in the
    run's space (never by its observed values: `choice: [0, 1, 2]` is three categories, not a
    range from 0 to 2)."""

    key: str
    #: "category" (a `choice`), "log" (`loguniform`) or "linear" (every other range).
    scale: str
    #: A categorical parameter's choices in the space's order; empty otherwise.
    choices: tuple = ()
    #: The label of each choice (`value_label`), in the same order.
    categories: tuple[str, ...] = ()

    def label(self, value: Any) -> str:
        """The label of a trial's value: its choice's label when it is one of the choices."""
        for choice, text in zip(self.choices, self.categories, strict=True):
            if _same_value(choice, value):
                return text
        return value_label(value)


def value_label(value: Any) -> str:
    """A parameter value as a reader sees it: `0.003`, `1e-05`, `mean`, `true`, `null`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def _same_value(choice: Any, value: Any) -> bool:
    # pandas turns a column of ints with a gap into floats: 1.0 is the choice 1, True is not.
    if isinstance(choice, bool | np.bool_) or isinstance(value, bool | np.bool_):
        return (
            isinstance(choice, bool | np.bool_)
            and isinstance(value, bool | np.bool_)
            and (bool(choice) == bool(value))
        )
    if isinstance(choice, int | float) and isinstance(value, int | float | np.number):
        return float(choice) == float(value)
    return choice == value


def param_axes(params: dict[str, Param]) -> dict[str, ParamAxis]:
    """The axis of each searched parameter, from its distribution.

    Args:
        params: `search_params(manifest)` (or the observed stand-in when the space no longer
            loads).

    Returns:
        `{key: ParamAxis}` in the order of `params`.
    """
    axes = {}
    for key, param in params.items():
        if param.kind == "choice":
            choices = tuple(param.args)
            axes[key] = ParamAxis(key, "category", choices, tuple(value_label(c) for c in choices))
        else:
            axes[key] = ParamAxis(key, "log" if param.kind == "loguniform" else "linear")
    return axes


def param_values(table: pd.DataFrame, axes: dict[str, ParamAxis]) -> pd.DataFrame:
    """The searched values of each trial as they are drawn, in the leaderboard's order.

    Args:
        table: `leaderboard(run)`.
        axes: `param_axes(...)`.

    Returns:
        `trial_id`, then one column per parameter: a categorical parameter's choice label
        (str, "" when the trial has no value), a numeric parameter's float.
    """
    frame = pd.DataFrame({"trial_id": table["trial_id"]})
    for key, axis in axes.items():
        values = table[key] if key in table else pd.Series([None] * len(table))
        if axis.scale == "category":
            frame[key] = [
                "" if v is None or (isinstance(v, float) and math.isnan(v)) else axis.label(v)
                for v in values
            ]
        else:
            frame[key] = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    return frame


def params_or_observed(run: Run) -> dict[str, Param]:
    """The run's searched parameters (`search_params`); when the space text no longer loads,
    distributions made from the values the trials took."""
    from sentune.errors import SentuneError
    from sentune.space import Param

    try:
        return search_params(run.manifest)
    except SentuneError as exc:
        log.warning("space of %s does not load (%s); using observed values", run.path, exc)
    out = {}
    for key in run.manifest.space.searched:
        seen = [p.get(key) for p in run.params.values()]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in seen)
        if numeric and len(set(seen)) > 1:
            out[key] = Param("uniform", (min(seen), max(seen)))
        else:
            out[key] = Param("choice", tuple(dict.fromkeys(seen)))
    return out
