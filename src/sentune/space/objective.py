"""What a space optimises: its `objective:` (macro-F1, with bounds on inference metrics) or
`objectives:` (a Pareto search), checked into a `config.Objective`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from sentune import config
from sentune.config import Objective
from sentune.errors import SpaceError


def parse_objective(where: str, single: Any, multi: Any) -> Objective:
    """The `objective:` or `objectives:` of a space file, checked.

    `objective: {maximize: val_macro_f1, subject_to: {latency_p95_ms: 8}}` bounds inference
    metrics (`config.CONSTRAINT_METRICS`); `objectives: [val_macro_f1, latency_p95_ms]` makes a
    Pareto search of macro-F1 (first, ASHA stops on it) and inference metrics
    (`config.INFERENCE_METRICS`). Neither: macro-F1 alone.

    Raises:
        SpaceError: Both keys, an unknown metric, a bound that is not a positive number, …
    """
    if single is not None and multi is not None:
        raise SpaceError(
            f"{where}: give objective (one metric, with bounds) or objectives (a Pareto search), "
            "not both"
        )
    if multi is not None:
        return Objective(metrics=_objective_list(where, multi))
    if single is None:
        return Objective()
    example = f"{{maximize: {config.VAL_MACRO_F1}, subject_to: {{{config.LATENCY_METRIC}: 8}}}}"
    if not isinstance(single, dict):
        raise SpaceError(f"{where}: objective: give a mapping, e.g. {example}; got {single!r}")
    unknown = sorted(set(single) - {"maximize", "subject_to"})
    if unknown:
        raise SpaceError(
            f"{where}: objective: unknown key {unknown[0]!r}; use maximize and subject_to, "
            f"e.g. {example}"
        )
    goal = single.get("maximize", config.VAL_MACRO_F1)
    if goal != config.VAL_MACRO_F1:
        raise SpaceError(
            f"{where}: objective: maximize {goal!r}: only {config.VAL_MACRO_F1} can be maximised "
            f"(ASHA stops trials on it); bound the others with subject_to, or list them under "
            "objectives for a Pareto search"
        )
    bounds = single.get("subject_to") or {}
    if not isinstance(bounds, dict):
        raise SpaceError(
            f"{where}: objective: subject_to: give a mapping of metric: upper bound, e.g. "
            f"{{{config.LATENCY_METRIC}: 8}}; got {bounds!r}"
        )
    constraints = {}
    for metric, limit in bounds.items():
        if metric not in config.CONSTRAINT_METRICS:
            raise SpaceError(
                f"{where}: objective: subject_to: unknown metric {metric!r}; bound one of "
                f"{', '.join(config.CONSTRAINT_METRICS)}"
            )
        constraints[metric] = _positive_bound(f"{where}: objective: subject_to: {metric}", limit)
    return Objective(constraints=constraints)


def _objective_list(where: str, multi: Any) -> tuple[str, ...]:
    example = f"[{config.VAL_MACRO_F1}, {config.LATENCY_METRIC}]"
    if not isinstance(multi, list) or len(multi) < 2:
        raise SpaceError(
            f"{where}: objectives: give a list of two or more metrics, e.g. {example}; "
            f"got {multi!r}"
        )
    if multi[0] != config.VAL_MACRO_F1:
        raise SpaceError(
            f"{where}: objectives: the first must be {config.VAL_MACRO_F1} (ASHA stops trials on "
            f"it), e.g. {example}; got {multi[0]!r}"
        )
    for metric in multi[1:]:
        if metric not in config.INFERENCE_METRICS:
            raise SpaceError(
                f"{where}: objectives: unknown metric {metric!r}; after {config.VAL_MACRO_F1} use "
                f"{', '.join(config.INFERENCE_METRICS)}"
            )
    if len(set(multi)) != len(multi):
        raise SpaceError(f"{where}: objectives: {multi!r} repeats a metric; list each once")
    return tuple(multi)


def _positive_bound(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpaceError(f"{where}: needs a number, got {value!r}")
    if value <= 0:
        raise SpaceError(f"{where}: needs a bound above 0, got {value!r}")
    return float(value)


def with_latency_budget(objective: Objective, max_latency_ms: float) -> Objective:
    """`objective` with its p95 latency bound set to `max_latency_ms` (`--max-latency-ms`)."""
    limit = _positive_bound("--max-latency-ms", max_latency_ms)
    return replace(objective, constraints={**objective.constraints, config.LATENCY_METRIC: limit})
