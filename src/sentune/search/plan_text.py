"""`sentune search SPACE --dry-run` in words: a `plan.Plan` as lines of at most
`report.terminal.WIDTH` columns, each headed by what it is about."""

from __future__ import annotations

import textwrap
from typing import Any

from sentune import config
from sentune.report.sentences import counted
from sentune.report.terminal import WIDTH
from sentune.search.plan import Estimate, Measurement, Plan
from sentune.search.progress import format_duration
from sentune.space import MaxLength, Param, SearchSpec

#: Each line of the plan starts with its label in a column this wide.
LABEL_WIDTH = 12


def format_plan(plan: Plan) -> str:
    """The plan as lines of at most `report.terminal.WIDTH` columns, each headed by what it is
    about: the space, model, data, max_length, searched and fixed values, objective, trials,
    strategy, resources, run folder, and the estimate with what it measured and assumed."""
    spec = plan.spec
    sections = [
        ("space", f"{spec.name} ({spec.path}): {' '.join(spec.description.split())}"),
        ("model", spec.model + (f" ({plan.model_path})" if plan.model_path != spec.model else "")),
        ("data", _data_text(spec, plan.data_stats)),
        ("max_length", _max_length_text(plan.max_length, plan.data_stats)),
        *_param_sections(spec),
        *(
            ("first" if i == 0 else "", f"{point.label}: {_values_text(point.params)}")
            for i, point in enumerate(plan.starts)
        ),
        *([("study", plan.warm_start)] if plan.warm_start else []),
        ("fixed", ", ".join(f"{k} {_value(v)}" for k, v in spec.fixed.items()) or "nothing"),
        ("objective", _objective_text(spec.objective)),
        ("trials", _trials_text(plan)),
        ("strategy", _strategy_text(plan)),
        ("resources", _resources_text(plan)),
        ("run folder", f"{plan.run_dir} (not created: this is a dry run)"),
    ]
    if plan.estimate is not None and plan.measurement is not None:
        sections += _estimate_sections(plan, plan.estimate, plan.measurement)
    lines = ["the plan of this search (--dry-run: no trial runs, no run folder is made)"]
    for label, text in sections:
        lines += _wrapped(label, text)
    return "\n".join(lines)


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=label.ljust(LABEL_WIDTH),
        subsequent_indent=" " * LABEL_WIDTH,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [label]


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _data_text(spec: SearchSpec, stats: dict[str, Any]) -> str:
    sizes, available = stats.get("split_sizes", {}), stats.get("available_sizes", {})

    def size(split: str, name: str) -> str:
        n, of = sizes.get(split), available.get(split)
        return f"{name} {n}" + (f" (of {of})" if of is not None and of != n else "")

    counts = stats.get("class_counts", {}).get("train", {})
    total = sum(counts.values()) or 1
    labels = ", ".join(f"{label} {count / total:.0%}" for label, count in counts.items())
    return (
        f"{spec.data.dataset}: {size('train', 'train')}, {size('validation', 'validation')}, "
        f"{size('test', 'test')} (never seen by the search); train labels {labels}"
    )


def _max_length_text(chosen: MaxLength, stats: dict[str, Any]) -> str:
    points = stats.get("train_token_lengths", {})
    spread = ", ".join(f"{k} {points[k]}" for k in ("p50", "p95", "max") if k in points)
    cut = ", ".join(f"{chosen.truncated_share[v]:.1%}" for v in chosen.values)
    return (
        f"{', '.join(map(str, chosen.values))} ({chosen.rule}; the model takes {chosen.limit}): "
        f"truncates {cut} of the training texts ({spread} tokens)"
    )


def _param_sections(spec: SearchSpec) -> list[tuple[str, str]]:
    """One line per searched parameter: its distribution, range and condition."""
    if not spec.params:
        return [("searched", "nothing: every trial trains the fixed configuration")]
    width = max(map(len, spec.params)) + 2
    return [
        ("searched" if i == 0 else "", f"{key.ljust(width)}{_param_text(param)}")
        for i, (key, param) in enumerate(spec.params.items())
    ]


def _param_text(param: Param) -> str:
    args = ", ".join(_value(a) for a in param.args[:2] if param.kind != "choice")
    text = (
        f"choice [{', '.join(_value(a) for a in param.args)}]"
        if param.kind == "choice"
        else f"{param.kind} [{args}]"
        + (f" step {_value(param.args[2])}" if len(param.args) > 2 else "")
    )
    for parent, allowed in param.when:
        text += f", when {parent} is {' or '.join(_value(v) for v in allowed)}"
    return text


def _objective_text(objective: config.Objective) -> str:
    goals = ", ".join(
        f"{d}imize {m}" for m, d in zip(objective.metrics, objective.directions(), strict=True)
    )
    bounds = ", ".join(f"{m} ≤ {_value(v)}" for m, v in objective.constraints.items())
    return goals + (f", subject to {bounds}" if bounds else "")


def _trials_text(plan: Plan) -> str:
    budget = plan.spec.budget
    text = f"{budget.trials}, up to {counted(budget.max_epochs, 'epoch')} each"
    early = [r for r in plan.rungs if r < budget.max_epochs]
    if early:
        text += (
            f"; ASHA may stop a trial at epoch {', '.join(map(_value, early))} (grace period "
            f"{_value(budget.grace_period)}, keeps 1/{budget.reduction_factor} at each rung)"
        )
    else:
        text += "; no trial is stopped early"
    if budget.evals_per_epoch > 1:
        text += f"; each evaluated {budget.evals_per_epoch} times an epoch"
    if budget.time_budget_s is not None:
        text += f"; the search stops after {format_duration(budget.time_budget_s)}"
    if plan.confirm_trials:
        text += (
            f"; then the top {plan.confirm_top} configurations over {budget.confirm_seeds} "
            f"seeds: about {counted(plan.confirm_trials, 'more full trial')}"
        )
    else:
        text += "; no confirmation over seeds (budget.confirm_seeds 0)"
    return text


def _strategy_text(plan: Plan) -> str:
    if plan.sampler is None:
        return f"{plan.strategy}: nothing to sample"
    sampler = dict(plan.sampler)
    name = sampler.pop("name")
    settings = ", ".join(f"{k} {_value(v).lower()}" for k, v in sampler.items())
    return f"{plan.strategy}: Optuna's {name.upper()} sampler ({settings})"


def _resources_text(plan: Plan) -> str:
    budget, options = plan.spec.budget, plan.options
    if plan.at_once is None:
        at_once = f"up to {budget.concurrency} at once" if budget.concurrency else "as many"
        where = f"on the cluster at {options.address} ({at_once} as its resources allow)"
    else:
        where = f"{counted(plan.at_once, 'trial')} at a time on this host"
    gpus = (
        f"{budget.gpus_per_trial:g} GPU each"
        + (
            f" ({int(1 / budget.gpus_per_trial + 1e-6)} trials share a GPU)"
            if budget.gpus_per_trial < 1
            else ""
        )
        if config.uses_gpus(budget)
        else "no GPU"
    )
    settings, measured = plan.settings, plan.measurement
    runs_on = f"precision {settings.precision}, device {settings.device}" + (
        f" ({measured.precision} on {measured.device} here)" if measured else ""
    )
    return (
        f"{where}: {counted(budget.cpus_per_trial, 'CPU')} and {gpus} each; {runs_on}"
        + (", under CUDA MPS" if options.mps else "")
        + (", torch.compile" if plan.spec.fixed.get("train.compile") else "")
    )


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {_value(value)}" for key, value in values.items())


def _estimate_sections(
    plan: Plan, estimate: Estimate, measured: Measurement
) -> list[tuple[str, str]]:
    spec, budget = plan.spec, plan.spec.budget
    search = (
        f"the search ~{format_duration(estimate.search_s)} ({budget.trials} trials × "
        f"~{estimate.trial_epochs:.2g} epochs at ~{format_duration(estimate.epoch_s)} an epoch, "
        f"{estimate.at_once} at a time"
        + (", cut at the time budget" if estimate.capped else "")
        + ")"
    )
    confirm = (
        f", then the confirmation ~{format_duration(estimate.confirm_s)}"
        if estimate.confirm_s
        else ""
    )
    timed = _values_text(
        {k: v for k in spec.params if (v := measured.values.get(k, _default(k))) is not None}
    )
    first = plan.starts[0].params if plan.starts else {}
    filled = [k for k in spec.params if k not in first and k in measured.values]
    which = f"the first trial ({plan.starts[0].label})" if plan.starts else "the defaults"
    if filled:
        which += f", with {', '.join(filled)} at the middle of the space (the sampler draws it)"
    evaluations = (
        f"{estimate.evaluations} evaluations an epoch"
        if estimate.evaluations > 1
        else "one an epoch"
    )
    return [
        ("estimate", f"~{format_duration(estimate.total_s)} in all: {search}{confirm}"),
        (
            "measured",
            f"{measured.steps} optimizer steps after a first one: {measured.samples_per_s:.1f} "
            f"training examples/s; one evaluation of {measured.eval_examples} validation "
            f"examples with its checkpoint: {measured.eval_per_s:.0f}/s ({evaluations}); "
            f"{measured.setup_s:.1f}s to build a trial's model; {measured.precision} on "
            f"{measured.device}, {counted(measured.threads, 'thread')}; {measured.wall_s:.1f}s in "
            "all",
        ),
        ("timed", f"{timed}: {which}" if timed else "the fixed configuration"),
        (
            "assumes",
            "this host as busy as it was during the measurement; trials at once each run as "
            "fast as the one measured; ASHA lets the first trial at "
            f"a rung and 1/{budget.reduction_factor} of the others go on; not counted: Ray's "
            "start, the data preparation, each trial's latency measurement and the analysis "
            "after",
        ),
    ]


def _default(key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(config.SECTIONS[section](), name)
