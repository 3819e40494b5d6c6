"""`sentune search SPACE --dry-run`: the plan of a search, settled by the rules the search runs
by, and an estimate of its wall time from a short timed measurement; nothing is run in Ray and
no run folder is made.

The plan goes as far as a search goes before Ray: the options and this host's resources
(`driver.check_search`; the run folder is made and removed at once, as the one check that
needs it), the model and the data prepared, `train.max_length: auto` and
`gpus_per_trial: auto` made concrete, the concurrency this host's memory holds
(`driver._prepare`), the trials' settings (`driver.trial_settings`) and the sampler's
(`strategies.sampler_settings`). So a bad space, override or option fails as the search
would, with the same one line. Then one configuration trains a few optimizer steps and one
evaluation in this process (`train.trial.run_trial`, no Ray), and the estimate scales that to
the search: trials, the epochs ASHA is expected to let them train, concurrency, and the
confirmation over seeds that follows. `plan_text` puts the plan in words.

Nothing is left on disk but what the search itself would reuse: the token cache (`.cache/sentune`)
is read, and the tokens of new data are added to it, only where that cache already exists;
otherwise the data is tokenized into a temporary folder, removed with the measurement's
checkpoint (also in a temporary folder).
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sentune import config
from sentune.config import BudgetConfig, TrialSettings
from sentune.search.options import SearchOptions
from sentune.search.strategies import STRATEGIES, sampler_settings
from sentune.space import MaxLength, Param, SearchSpec, StartPoint
from sentune.space.start import can_take

if TYPE_CHECKING:
    from sentune.data import PreparedData


#: Optimizer steps timed, after a first one that is not (its allocations and first kernels).
MEASURED_STEPS = 3
#: Validation examples of the timed evaluation, at most.
MEASURED_EVAL_EXAMPLES = 128


class Measurement(NamedTuple):
    """One configuration trained for a few steps and evaluated once, in this process."""

    #: The configuration timed (`timed_config`), by dotted key.
    values: dict[str, Any]
    #: Optimizer steps timed (after a first, untimed one) and the examples in them.
    steps: int
    examples: int
    #: Training examples per second over the timed steps.
    samples_per_s: float
    #: Validation examples per second of the evaluation, the checkpoint written after it included.
    eval_examples: int
    eval_per_s: float
    #: Seconds from the trial's start to its first step, that step left out (building the model).
    setup_s: float
    #: What the trial resolved: `bf16`/`fp16`/`fp32`, `cpu`/`cuda`, and its torch threads.
    precision: str
    device: str
    threads: int
    #: The whole measurement, model build included.
    wall_s: float


class Estimate(NamedTuple):
    """The search's wall time from a `Measurement` (see `estimate_wall`)."""

    total_s: float
    search_s: float
    confirm_s: float
    #: One epoch of one trial: its training and its evaluations.
    epoch_s: float
    #: Evaluations per epoch (`budget.evals_per_epoch`, and `train.eval_every_steps`'s).
    evaluations: int
    #: Epochs a search trial is expected to train (all of them under FIFO; fewer under ASHA).
    trial_epochs: float
    #: Trials at once assumed (the host's, or the budget's concurrency on a cluster, else 1).
    at_once: int
    #: Whether `budget.time_budget_s` cuts the search short of its trials.
    capped: bool


class Plan(NamedTuple):
    """What `sentune search` would do: the space made concrete and where and how it runs."""

    #: The space with `train.max_length`, `gpus_per_trial` and the concurrency made concrete.
    spec: SearchSpec
    strategy: str
    sampler: dict[str, Any] | None
    #: The run folder the search would create (it is not created).
    run_dir: Path
    model_path: str
    #: The configurations the study tries first (`SearchSpec.start_points`), within the budget.
    starts: list[StartPoint]
    #: What a warm start would seed the study with (`WarmStart.line`), if the search has one.
    warm_start: str | None
    data_stats: dict[str, Any]
    max_length: MaxLength
    #: Trials running at once on this host (None on a cluster: Ray places them).
    at_once: int | None
    rungs: list[float]
    confirm_top: int
    confirm_trials: int
    settings: TrialSettings
    options: SearchOptions
    measurement: Measurement | None
    estimate: Estimate | None


def build_plan(
    spec: SearchSpec,
    *,
    options: SearchOptions = SearchOptions(),
    warm_start: Path | None = None,
    measure: bool = True,
) -> Plan:
    """The plan of `search.run(spec, options=options, warm_start=warm_start)`, without running
    it.

    Args:
        spec: A validated search space (with the command's overrides).
        options: The search's runtime options.
        warm_start: An earlier run whose trials would seed the study (`search.warmstart`).
        measure: Time one configuration (`measure_trial`) and estimate the wall time.

    Returns:
        The plan; `measurement` and `estimate` are None without `measure`.

    Raises:
        SentuneError: What the search would raise before its first trial, in the same words.
    """
    from sentune.analysis import asha_rungs
    from sentune.analysis.confirm import expected_confirm_trials
    from sentune.search import driver, warmstart
    from sentune.search.resources import concurrent_trials

    options, run_dir = driver.check_search(spec, options)
    source = warmstart.read_source(warm_start, spec) if warm_start is not None else None
    _check_creatable(run_dir)
    with _token_cache(options.cache_dir) as cache_dir:
        spec, data, model_path, max_length = driver._prepare(
            spec, replace(options, cache_dir=cache_dir)
        )
    warm = warmstart.select(source, spec, data) if source is not None else None
    settings = driver.trial_settings(spec, model_path, options)
    budget = spec.budget
    strategy = STRATEGIES[options.strategy]
    at_once = concurrent_trials(budget, options)
    rungs = asha_rungs(budget, options.strategy)
    measurement = estimate = None
    if measure:
        timed = timed_config(spec)
        measurement = measure_trial(timed, data, _measured_settings(settings))
        estimate = estimate_wall(
            measurement,
            budget,
            rungs=rungs,
            train_size=len(data.train),
            val_size=len(data.validation),
            eval_every_steps=config.build_section("train", timed).eval_every_steps,
            at_once=at_once,
        )
    return Plan(
        spec=spec,
        strategy=options.strategy,
        sampler=sampler_settings(strategy.sampler, budget) if spec.params else None,
        run_dir=run_dir,
        model_path=model_path,
        starts=spec.start_points()[: budget.trials] if spec.params else [],
        warm_start=warm.line() if warm is not None else None,
        data_stats=data.stats,
        max_length=max_length,
        at_once=at_once,
        rungs=rungs,
        confirm_top=config.confirm_top(budget),
        confirm_trials=expected_confirm_trials(budget),
        settings=settings,
        options=options,
        measurement=measurement,
        estimate=estimate,
    )


def _check_creatable(run_dir: Path) -> None:
    """What the search finds only as it creates its run folder (a storage that looks writable
    where no folder can be made, such as /proc as root): the folder is made as the search makes
    it, failing with the search's words (`driver._storage_errors`), then removed at once with
    the parents it needed."""
    from sentune.search import driver

    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    with driver._storage_errors(run_dir):
        run_dir.mkdir(parents=True)
    for folder in made:  # the run folder first, then its parents
        folder.rmdir()


@contextmanager
def _token_cache(cache_dir: Path):
    """The token cache a dry run may use: the search's own where it exists (the search then
    finds the tokens there), else a temporary folder, removed after."""
    if Path(cache_dir).is_dir():
        yield cache_dir
        return
    with tempfile.TemporaryDirectory(prefix="sentune-plan-") as folder:
        yield Path(folder)


# --- the measurement ---------------------------------------------------------------------------


def timed_config(spec: SearchSpec) -> dict[str, Any]:
    """The configuration the dry run times: the space's fixed values with the search's first
    trial where the space sets it (its first start point: the recipe, unless the space turns it
    off). A searched key that point leaves to the sampler takes its `config.py` default where
    the search can take it, else the middle of its values, so that the speed timed is that of
    a configuration the search runs; a default of None (the model's own) is kept."""
    first = spec.start_points()[:1]
    values = {**spec.fixed, **(first[0].params if first else {})}
    for key, param in spec.params.items():
        section, name = key.split(".", 1)
        default = getattr(config.SECTIONS[section](), name)
        if key not in values and default is not None and not can_take(param, default):
            values[key] = _middle(param)
    return values


def _middle(param: Param) -> Any:
    if param.kind == "choice":
        return param.args[len(param.args) // 2]
    low, high = param.args[0], param.args[1]
    middle = math.sqrt(low * high) if param.kind == "loguniform" else (low + high) / 2
    return round(middle) if param.kind in ("int", "qrandint") else middle


def _measured_settings(settings: TrialSettings) -> TrialSettings:
    """The trials' settings for the measurement: one epoch of the sample evaluated once, no
    latency measurement (its few seconds a trial are left out of the estimate), on the device
    the trials get (Ray hides the GPUs from trials that ask for none)."""
    device = settings.device
    if device == "auto" and settings.gpus_per_trial <= 0:
        device = "cpu"
    return replace(
        settings,
        max_epochs=1,
        evals_per_epoch=1,
        measure_latency=False,
        device=device,
        started_at=None,
    )


def measure_trial(
    values: dict[str, Any],
    data: PreparedData,
    settings: TrialSettings,
    *,
    steps: int = MEASURED_STEPS,
    eval_examples: int = MEASURED_EVAL_EXAMPLES,
) -> Measurement:
    """Train `values` for `steps` optimizer steps after a first, untimed one, then evaluate once,
    with the trial's own code (`train.trial.run_trial`) in this process, on a sample of the
    training split (the examples of those steps) and of the validation split.

    Args:
        values: Tunable values by dotted key (`timed_config`).
        data: The search's prepared data.
        settings: The trials' settings (`_measured_settings`).
        steps: Optimizer steps timed.
        eval_examples: Validation examples evaluated, at most.
    """
    import accelerate  # noqa: F401 - imported before the clock, as a trial's worker does once
    import torch

    import sentune.train.model  # noqa: F401 - likewise
    from sentune.train.trial import run_trial

    train = config.build_section("train", values)
    per_step = train.batch_size * max(1, math.ceil(train.effective_batch_size / train.batch_size))
    rng = np.random.default_rng(0)
    sample = replace(
        data,
        train=_sample(data.train, per_step * (steps + 1), rng),
        validation=_sample(data.validation, eval_examples, rng),
    )
    # ("step", when, batches done in the epoch) after each optimizer step, ("report", when, 0)
    # after each evaluation, its checkpoint written.
    events: list[tuple[str, float, int]] = []
    threads = torch.get_num_threads()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sentune-plan-") as workdir, _quiet():
        try:
            result = run_trial(
                values,
                sample,
                lambda _metrics, _checkpoint: events.append(("report", time.perf_counter(), 0)),
                settings=replace(settings, checkpoint_dir=workdir),
                on_step=lambda at: events.append(("step", time.perf_counter(), at.batches_done)),
            )
            measured_threads = torch.get_num_threads()
        finally:
            torch.set_num_threads(threads)  # run_trial sets this process's threads
    wall = time.perf_counter() - started
    # Training: from one step to the next (the first step, and a step after an evaluation,
    # are left out); an evaluation: from the step before it to its report.
    train_s, examples, timed, evaluations = 0.0, 0, 0, []
    for (kind, at, batches), (next_kind, next_at, next_batches) in itertools.pairwise(events):
        if kind == next_kind == "step":
            train_s, timed = train_s + next_at - at, timed + 1
            examples += (next_batches - batches) * train.batch_size
        elif kind == "step" and next_kind == "report":
            evaluations.append(next_at - at)
    first_step = events[0][1]
    step_s = train_s / timed if timed else first_step - started
    return Measurement(
        values=dict(values),
        steps=timed,
        examples=examples,
        samples_per_s=examples / train_s if train_s > 0 else per_step / step_s,
        eval_examples=len(sample.validation),
        eval_per_s=len(sample.validation) / max(evaluations[0], 1e-9),
        setup_s=max(0.0, first_step - started - step_s),
        precision=result.best.get("precision", settings.precision),
        device=settings.device,
        threads=measured_threads,
        wall_s=wall,
    )


def _sample(split, size: int, rng: np.random.Generator):
    """`size` examples of `split` at random (all of them when it is smaller), every class kept:
    class weights need each class at least once."""
    from sentune.data import Split

    order = rng.permutation(len(split))
    _, firsts = np.unique(split.labels[order], return_index=True)
    chosen = order[np.sort(firsts)].tolist()
    taken = set(chosen)
    chosen += [int(i) for i in order if int(i) not in taken][: max(0, size - len(chosen))]
    chosen.sort()
    return Split(
        texts=[split.texts[i] for i in chosen],
        labels=split.labels[chosen],
        input_ids=[split.input_ids[i] for i in chosen],
    )


@contextmanager
def _quiet():
    """Without the trial's log lines (its score after a few steps means nothing) and the
    progress bars of each weight load and save, as in a search's trials (`tuner._trainable`)."""
    from transformers.utils import logging as hf_logging

    logger, bars = logging.getLogger("sentune.train"), hf_logging.is_progress_bar_enabled()
    level = logger.level
    logger.setLevel(logging.WARNING)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


# --- the estimate ------------------------------------------------------------------------------


def expected_epochs(budget: BudgetConfig, rungs: list[float]) -> float:
    """Epochs a search trial is expected to train: every trial trains to the first rung, and of
    the trials that reach a rung, the first continues and `1/reduction_factor` of the others do
    (Ray's asynchronous ASHA compares each trial with those that reached the rung before it).
    FIFO has one rung, the last epoch: every trial trains all of them."""
    trials = float(budget.trials)
    reached, previous, total = trials, 0.0, 0.0
    for rung in rungs:
        total += reached * (rung - previous)
        previous = rung
        reached = min(reached, 1 + (reached - 1) / budget.reduction_factor)
    return total / trials


def estimate_wall(
    measured: Measurement,
    budget: BudgetConfig,
    *,
    rungs: list[float],
    train_size: int,
    val_size: int,
    eval_every_steps: int | None,
    at_once: int | None,
) -> Estimate:
    """The search's wall time: each trial builds its model (`setup_s`) and trains its expected
    epochs (`expected_epochs`), each epoch its training split at the measured speed and its
    evaluations of the validation split; `at_once` trials at a time, each as fast as the one
    measured; then the confirmation's full-budget trials
    (`analysis.confirm.expected_confirm_trials`). Ray's start, the data preparation and the
    analysis after the search are not counted."""
    from sentune.analysis.confirm import expected_confirm_trials

    train = config.build_section("train", measured.values)
    per_step = train.batch_size * max(1, math.ceil(train.effective_batch_size / train.batch_size))
    steps_per_epoch = math.ceil(train_size / per_step)
    evaluations = budget.evals_per_epoch + (
        steps_per_epoch // eval_every_steps if eval_every_steps else 0
    )
    epoch_s = train_size / measured.samples_per_s + evaluations * val_size / measured.eval_per_s
    parallel = at_once or budget.concurrency or 1
    trial_epochs = expected_epochs(budget, rungs)
    search_s = budget.trials * (measured.setup_s + trial_epochs * epoch_s) / parallel
    capped = budget.time_budget_s is not None and search_s > budget.time_budget_s
    if capped:
        search_s = float(budget.time_budget_s)
    confirming = expected_confirm_trials(budget)
    confirm_s = (
        confirming * (measured.setup_s + budget.max_epochs * epoch_s) / min(parallel, confirming)
        if confirming
        else 0.0
    )
    return Estimate(
        total_s=search_s + confirm_s,
        search_s=search_s,
        confirm_s=confirm_s,
        epoch_s=epoch_s,
        evaluations=evaluations,
        trial_epochs=trial_epochs,
        at_once=parallel,
        capped=capped,
    )
