"""Where a search starts: the recipe (the `config.py` defaults of its searched keys, which follow
the practitioner's guide, with the model's own values from `config.MODEL_RECIPES`) and the start
points a space lists, each checked against the space.

A space lists start points as partial configurations of its searched keys::

    start:
      - {head.dropout: 0.1}
      - {head.layers: 1, head.width: 384}

The searcher enqueues them into the Optuna study before it samples (`searcher.build_searcher`):
they are its first trials, and the sampler learns from them like from any other. A key a start
point leaves out is drawn by the sampler. `budget.start_from_recipe: false` drops the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sentune import config
from sentune.space.params import Param, condition_order, is_active

#: The label of the recipe's start point (shown in the progress line and kept in the journal).
RECIPE = "recipe"


@dataclass(frozen=True)
class StartPoint:
    """A configuration the study tries before it samples: `label` (`recipe`, `start 1`, …) and
    the values of some searched keys (the others are drawn)."""

    label: str
    params: dict[str, Any]

    def matches(self, trial_config: dict[str, Any]) -> bool:
        """Whether a trial's configuration is this start point (its every value)."""
        return all(trial_config.get(key) == value for key, value in self.params.items())


def recipe(params: dict[str, Param], model: str = "") -> dict[str, Any]:
    """The recipe's value (`config.recipe_value`: the `config.py` default, or `model`'s own in
    `config.MODEL_RECIPES`) of each searched key that the space can take and whose conditions
    the other values meet; keys whose value lies outside the space (or is None, like
    `head.width`) are left to the sampler."""
    values: dict[str, Any] = {}
    for key in condition_order(params):
        default = config.recipe_value(key, model)
        if (
            default is not None
            and is_active(params[key], values)
            and can_take(params[key], default)
        ):
            values[key] = default
    return values


def start_points(
    params: dict[str, Param],
    listed: tuple[dict[str, Any], ...],
    *,
    from_recipe: bool,
    model: str = "",
) -> list[StartPoint]:
    """The start points of a search in the order they run: the recipe first (unless
    `from_recipe` is False, or the space searches nothing the recipe sets), then the listed
    ones. Each is checked against `params` (the space after `train.max_length` was resolved).

    Raises:
        ValueError: A listed start point names an unsearched key, a value the space cannot take,
            or a key whose condition its other values do not meet (the message names it).
    """
    points = []
    if from_recipe:
        values = recipe(params, model)
        if values:
            points.append(StartPoint(RECIPE, values))
    for number, values in enumerate(listed, start=1):
        check_start(params, values, number)
        points.append(StartPoint(f"start {number}", dict(values)))
    return points


def check_start(params: dict[str, Param], values: dict[str, Any], number: int) -> None:
    """Check listed start point `number` against the searched `params` (see `start_points`)."""
    at = f"start point {number}"
    for key, value in values.items():
        if key not in params:
            searched = ", ".join(params) or "nothing"
            raise ValueError(f"{at}: {key} is not searched (searched: {searched}); drop it")
        param = params[key]
        if not can_take(param, value):
            raise ValueError(
                f"{at}: {key}={value!r} is outside the space ({param.kind} "
                f"{list(param.args)}); use a value the search can take"
            )
    chosen = {key: values[key] for key in condition_order(params) if key in values}
    for key in chosen:
        parents = {p: v for p, v in chosen.items() if p != key}
        # A parent the start point leaves out is drawn; only a given parent can contradict.
        unmet = [
            parent
            for parent, allowed in params[key].when
            if parent in parents and parents[parent] not in allowed
        ]
        if unmet:
            raise ValueError(
                f"{at}: {key} is only searched when {unmet[0]} is one of "
                f"{list(dict(params[key].when)[unmet[0]])}, and the start point sets "
                f"{unmet[0]}={parents[unmet[0]]!r}; drop {key} or change {unmet[0]}"
            )


def can_take(param: Param, value: Any) -> bool:
    """Whether `param` can take `value` (a choice's values; a range's ends included)."""
    if param.kind == "choice":
        return value in param.args
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if param.kind in ("int", "qrandint") and float(value) != int(value):
        return False
    return param.args[0] <= value <= param.args[1]
