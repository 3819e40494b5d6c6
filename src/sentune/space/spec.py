"""A validated search space (`SearchSpec`), and `train.max_length` taken from the data.

`resolve_max_length` turns `train.max_length: auto` and `{quantiles: [...]}` into token counts
against the training split's token lengths, once, before any trial runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sentune import config
from sentune.config import BudgetConfig, DataConfig, Objective
from sentune.space.params import DefineByRun, Param
from sentune.space.start import StartPoint, start_points

#: The one key whose values can come from the data (`auto`, `quantiles`).
MAX_LENGTH_KEY = "train.max_length"


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space with its fixed settings, budget, model and data."""

    name: str
    path: Path
    description: str
    model: str
    data: DataConfig
    budget: BudgetConfig
    #: Dotted keys of the tunable sections, fixed for every trial.
    fixed: dict[str, Any] = field(default_factory=dict)
    #: Dotted keys of the tunable sections, searched.
    params: dict[str, Param] = field(default_factory=dict)
    #: The Optuna sampler the space asks for (`config.SAMPLERS`); None: TPE.
    sampler: str | None = None
    #: What the search optimises (macro-F1 alone unless the space says more).
    objective: Objective = field(default_factory=Objective)
    #: The start points the space lists (`start:`), by dotted key; see `start_points`.
    starts: tuple[dict[str, Any], ...] = ()

    def define_by_run(self) -> DefineByRun:
        """The Optuna define-by-run space of this search (conditions honoured)."""
        return DefineByRun(self.params)

    def start_points(self) -> list[StartPoint]:
        """The configurations the study tries first: the recipe (unless
        `budget.start_from_recipe` is off), then the space's `start:` list (`space.start`).

        Raises:
            ValueError: A listed point the space cannot take (after `train.max_length` took
                its values from the data).
        """
        return start_points(
            self.params, self.starts, from_recipe=self.budget.start_from_recipe, model=self.model
        )

    def values(self, key: str) -> list[Any]:
        """The values a tunable key can take in this search (a range as its two ends)."""
        if key in self.params:
            p = self.params[key]
            return list(p.args) if p.kind == "choice" else list(p.args[:2])
        section, name = key.split(".", 1)
        return [self.fixed.get(key, getattr(config.SECTIONS[section](), name))]


# --- max_length from the data ---------------------------------------------------------------------


class MaxLength(NamedTuple):
    """The `train.max_length` values of a search, how they were chosen and what each cuts."""

    #: `auto p95`, `quantiles [0.5, 0.9]`, `fixed`, `default`, or `searched <distribution>`.
    rule: str
    values: tuple[int, ...]
    #: Share of the training texts longer than each value (they are truncated).
    truncated_share: dict[int, float]
    #: The model's limit in tokens (auto and quantile values are capped there).
    limit: int

    def record(self) -> dict[str, Any]:
        """The JSON form the run manifest keeps (`max_length`)."""
        return {
            "rule": self.rule,
            "values": list(self.values),
            "truncated_share": {str(v): share for v, share in self.truncated_share.items()},
            "limit": self.limit,
        }


def covering_max_length(lengths: np.ndarray, quantile: float, *, limit: int) -> int:
    """The smallest multiple of `config.MAX_LENGTH_MULTIPLE` tokens into which at least
    `quantile` of the texts fit whole, capped at `limit`.

    Args:
        lengths: Token count of each training text, special tokens included.
        quantile: The share of texts to cover, in (0, 1].
        limit: The model's longest input.
    """
    lengths = np.asarray(lengths)
    if not len(lengths) or not 0 < quantile <= 1:
        raise ValueError(f"need token lengths and a quantile in (0, 1], got {quantile}")
    # inverted_cdf: the shortest observed length that `quantile` of the texts do not exceed.
    covered = int(np.quantile(lengths, quantile, method="inverted_cdf"))
    step = config.MAX_LENGTH_MULTIPLE
    return min(-(-covered // step) * step, limit)


def resolve_max_length(
    spec: SearchSpec, lengths: np.ndarray, *, limit: int
) -> tuple[SearchSpec, MaxLength]:
    """Turn `train.max_length: auto` and `{quantiles: […]}` into concrete token counts.

    `auto` becomes the value covering `config.MAX_LENGTH_QUANTILE` of the texts; quantiles
    become a `choice` of the values covering each (deduplicated; one value is fixed instead).
    A spec with concrete values comes back unchanged, with what its values truncate.

    Args:
        spec: A loaded space.
        lengths: Token count of each training text, special tokens included.
        limit: The model's longest input.

    Returns:
        The spec with concrete values, and how they were chosen.
    """
    key = MAX_LENGTH_KEY
    fixed, params = dict(spec.fixed), dict(spec.params)
    param = params.get(key)
    if fixed.get(key) == config.MAX_LENGTH_AUTO:
        quantile = config.MAX_LENGTH_QUANTILE
        rule = f"auto p{quantile * 100:g}"
        fixed[key] = covering_max_length(lengths, quantile, limit=limit)
    elif param is not None and param.kind == "quantiles":
        rule = f"quantiles [{', '.join(f'{q:g}' for q in param.args)}]"
        values = sorted({covering_max_length(lengths, q, limit=limit) for q in param.args})
        if len(values) == 1:
            del params[key]
            fixed[key] = values[0]
        else:
            params[key] = Param("choice", tuple(values))
    elif param is not None:
        rule = f"searched {param.kind}"
    else:
        rule = "fixed" if key in fixed else "default"
    resolved = replace(spec, fixed=fixed, params=params)
    values = tuple(sorted({int(v) for v in resolved.values(key)}))
    lengths = np.asarray(lengths)
    shares = {v: float((lengths > v).mean()) if len(lengths) else 0.0 for v in values}
    return resolved, MaxLength(rule, values, shares, limit)
