"""The Tune wiring of a search: the function trainable around `train.trial.run_trial` (with
resources, the progress files and the trials that already ended), the Tuner and its RunConfig
(checkpoints, retries, callbacks), and `fit` with Ray's output kept quiet and an out-of-memory
kill said in one line.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune import config, runs
from sentune.config import BudgetConfig, TrialSettings
from sentune.errors import ResourceError
from sentune.search.strategies import (
    Strategy,
)
from sentune.space import (
    SearchSpec,
)
from sentune.train import scratch

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData


from sentune.machine import environment
from sentune.search.callbacks import progress_callback, trial_ledger
from sentune.search.options import SearchOptions
from sentune.search.searcher import build_scheduler, build_searcher
from sentune.search.tracking import tracking_callback
from sentune.search.where import open_store

log = logging.getLogger(__name__)


def trainable_with_resources(
    data: PreparedData,
    settings: TrialSettings,
    budget: BudgetConfig,
    hook,
    run_dir: Path,
    *,
    finished: frozenset[str] = frozenset(),
):
    from ray import tune

    trainable = tune.with_parameters(
        _trainable,
        data=data,
        settings=settings,
        hook=hook,
        progress_dir=make_progress_dir(run_dir),
        finished=finished,
    )
    return tune.with_resources(
        trainable, {"cpu": budget.cpus_per_trial, "gpu": budget.gpus_per_trial}
    )


def make_progress_dir(run_dir: Path) -> str:
    """`runs.progress_dir`, made: the search's process makes it, so that only trials on this
    machine (the default) write there; a trial on another node of a cluster finds no such
    folder and its epochs only show their evaluations."""
    folder = runs.progress_dir(run_dir).resolve()
    folder.mkdir(exist_ok=True)
    return str(folder)


def build_tuner(
    spec: SearchSpec,
    data: PreparedData,
    settings: TrialSettings,
    run_dir: Path,
    strategy: Strategy,
    options: SearchOptions,
    *,
    ran: int = 0,
):
    """The search's `Tuner`. `ran`: the trials the run's study already ran (a grown search,
    `driver.grow`): Tune starts `budget.trials - ran` more, as the searcher, which counts every
    trial of the journal against `budget.trials`, does."""
    from ray import tune

    quiet_unless_verbose(options)
    budget = spec.budget
    trainable = trainable_with_resources(data, settings, budget, options.trial_hook, run_dir)
    return tune.Tuner(
        trainable,
        # The searcher draws the searched parameters (define-by-run, conditions honoured);
        # Tune's own config holds the fixed ones only.
        param_space=dict(spec.fixed),
        tune_config=tune.TuneConfig(
            metric=config.VAL_MACRO_F1,
            mode=config.MODE,
            search_alg=build_searcher(strategy.sampler, spec, run_dir),
            scheduler=build_scheduler(strategy.scheduler, spec),
            num_samples=budget.trials - ran,
            max_concurrent_trials=budget.concurrency,
            time_budget_s=budget.time_budget_s,
            # A finished trial's worker takes the next trial: no new process, imports, CUDA
            # context or encoder read. Measured on 2 CPUs, 4 sequential tiny trials: 40 s -> 15 s,
            # with identical losses per configuration (tests/test_search.py checks it).
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=run_config(
            run_dir.name,
            open_store(options).uri or str(run_dir.resolve().parent),
            _progress_reporter(spec, options, run_dir, ran=ran),
            options,
            ledger=trial_ledger(run_dir, run_dir, open_store(options), hook=options.ledger_hook),
            tracking=tracking_callback(run_dir, open_store(options)),
        ),
    )


def run_config(
    name: str, storage_path: str, progress, options: SearchOptions, *, ledger, tracking=None
):
    """Where a Tune experiment writes (`<storage_path>/<name>`: a folder or a URI), its
    checkpoints, retries and callbacks: the same for the search and its confirmation.
    `tracking`: its trackers' callback (`tracking_callback`); None draws TensorBoard curves
    only (a refit)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    return tune.RunConfig(
        name=name,
        # A URI is resolved by pyarrow on each node, with that node's credentials.
        storage_path=storage_path,
        # Ray keeps the top `num_to_keep` checkpoints by score and, always, the latest one:
        # the best for export, the latest to continue from. `_finish` drops the latest of
        # finished trials.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,
            checkpoint_score_attribute=config.VAL_MACRO_F1,
            checkpoint_score_order=config.MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        # Ray's JSON logger writes each result into the trial's staging before the ledger
        # stores it (Tune would add the logger after the ledger otherwise).
        callbacks=[JsonLoggerCallback(), ledger, progress, tracking or tracking_callback()],
        verbose=1 if options.verbose else 0,
    )


def _trial_name(trial) -> str:
    return trial.trial_id


#: How long a reused worker waits for a stopped trial to wind down (its `finally` blocks: freeing
#: memory, removing checkpoint folders) before it takes the next trial. Ray's own default, 2 s,
#: is too short on a busy machine or a large GPU, and when the wait runs out Ray 2.60 fails the
#: handover and never starts the next trial: the search hangs. Ray reads it in the worker.
WIND_DOWN_WAIT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
WIND_DOWN_WAIT_S = 600


def _trainable(
    trial_config: dict[str, Any],
    *,
    data: PreparedData,
    settings: TrialSettings,
    hook=None,
    progress_dir: str | None = None,
    finished: frozenset[str] = frozenset(),
):
    """The Tune function trainable: `run_trial` with a callback that reports to Tune, and one
    that writes where each epoch stands to `progress_dir` (`progress.ProgressFile`). A trial
    whose folder is in `finished` ended before a kill that Tune's saved state missed
    (`finished_trials`): it ends at once, untouched."""
    from ray import tune

    if Path(tune.get_context().get_trial_dir()).name in finished:
        return
    from transformers.utils import logging as hf_logging

    from sentune.train.progress import ProgressFile
    from sentune.train.trial import run_trial

    # Set here, in the worker, so that it holds on any cluster (`--address` included).
    os.environ.setdefault(WIND_DOWN_WAIT_ENV, str(WIND_DOWN_WAIT_S))
    # One progress bar per weight load and save would flood the driver's log.
    hf_logging.disable_progress_bar()
    # Trials that Ray ended by ending their worker left their folders behind.
    scratch.sweep()
    workdir = scratch.make()

    latest = tune.get_checkpoint()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)
        if hook is not None:
            hook(metrics, latest is not None)

    try:
        resume_from = None
        if latest is not None:
            # A retry after a failure, or a resumed search: continue where the trial left off.
            resume_from = Path(latest.to_directory(str(workdir / "resume")))
        run_trial(
            trial_config,
            data,
            report,
            settings=replace(settings, checkpoint_dir=str(workdir / "out")),
            resume_from=resume_from,
            on_step=ProgressFile(
                Path(progress_dir),
                tune.get_context().get_trial_id(),
                started_at=settings.started_at,
            )
            if progress_dir
            else None,
        )
    finally:
        scratch.release(workdir)


#: Ray Tune's switch off its check that a result names the objective (read at each result).
_STRICT_METRICS = "TUNE_DISABLE_STRICT_METRIC_CHECKING"

#: Ray Tune's switch between its output engines (read when `Tuner.fit` starts).
_TUNE_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


def fit(tuner, options: SearchOptions, *, finished: frozenset[str] = frozenset()):
    """`tuner.fit()` (`fit_quietly`), with an out-of-memory kill said in one line.

    Ray kills a worker when the host runs low on memory. Tune retries a trial killed while it
    trains, but a kill while a trial's worker starts ends `fit` with Ray's `OutOfMemoryError`
    inside a `RuntimeError` and pages of Ray's report; this raises a `ResourceError` that says
    what to lower instead (the run folder is then kept or removed as for any failure).

    A resumed experiment whose trials in `finished` Tune restarts (`recovery.finished_trials`):
    their trainable ends at once, and Tune ends them with the result it saved last, which may
    precede their first evaluation; Tune's check that every result names the objective is off
    for that fit (the trainable reports it with every evaluation).
    """
    try:
        with environment({_STRICT_METRICS: "1"} if finished else {}):
            return fit_quietly(tuner, options)
    except Exception as exc:
        killed = _out_of_memory(exc)
        if killed is None:
            raise
        usage = re.search(r"was ([\d.]+GB used / [\d.]+GB limit)", str(killed))
        raise ResourceError(
            "this host ran out of memory and Ray killed a trial's worker"
            + (f" ({usage[1]})" if usage else "")
            + "; lower train.batch_size or train.max_length, or --concurrency"
        ) from exc


def _out_of_memory(exc: BaseException) -> BaseException | None:
    """Ray's `OutOfMemoryError` in `exc`'s chain of causes, if any."""
    from ray.exceptions import OutOfMemoryError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OutOfMemoryError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def fit_quietly(tuner, options: SearchOptions):
    """`tuner.fit()`, printing nothing of Tune's own unless `options.verbose`.

    Tune's new output engine prints an experiment box and a TensorBoard hint at every start
    whatever `verbose` says (Ray 2.60 `tune.run` calls `experiment_started` unconditionally);
    its legacy engine honours `verbose=0`. The switch is an environment variable, so it is
    set for the call only.
    """
    if options.verbose:
        return tuner.fit()
    with environment({_TUNE_NEW_OUTPUT: "0"}):
        return tuner.fit()


def quiet_unless_verbose(options: SearchOptions) -> None:
    """Unless `options.verbose`, silence Ray Tune's repeated warnings (e.g. "Experiment state
    snapshotting ...") and Optuna's per-study and per-trial info lines: the progress lines
    (`_progress_reporter`) are the terminal view. Before the searcher is built: it creates the
    study."""
    if options.verbose:
        return
    import optuna

    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _progress_reporter(spec: SearchSpec, options: SearchOptions, run_dir: Path, *, ran: int = 0):
    """A Tune callback that prints one line per trial event with an estimate (`progress.py`)
    that counts the confirmation over seeds which follows the search. Of a grown search: its
    `budget.trials - ran` added trials, and the confirmation trials not yet run."""
    from sentune.analysis import asha_rungs
    from sentune.analysis.confirm import expected_confirm_trials

    budget = spec.budget
    confirming = runs.confirm_dir(run_dir)
    confirmed = len(runs.trial_dirs(confirming)) if ran and confirming.is_dir() else 0
    return progress_callback(
        total=budget.trials - ran,
        max_epochs=budget.max_epochs,
        rungs=asha_rungs(budget, options.strategy),
        shown=set(spec.params),
        run_dir=run_dir,
        time_budget_s=budget.time_budget_s,
        then_trials=max(0, expected_confirm_trials(budget) - confirmed),
        starts=spec.start_points()[: budget.trials] if spec.params else [],
    )
