"""The confirmation over seeds: the top configurations retrained to the full budget with other
seeds, as a Tune experiment of its own inside the run (`runs.CONFIRM_DIR`), FIFO.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune import config, runs
from sentune.config import BudgetConfig, TrialSettings
from sentune.runs import storage

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData


from sentune.search.callbacks import progress_callback, trial_ledger
from sentune.search.options import SearchOptions
from sentune.search.recovery import finished_trials, settle_unknown_trials
from sentune.search.searcher import config_list
from sentune.search.tracking import tracking_callback
from sentune.search.tuner import fit, run_config, trainable_with_resources
from sentune.search.where import open_store, resume_command, tune_location

log = logging.getLogger(__name__)


def run_confirmation(
    run_dir: Path,
    data: PreparedData,
    settings: TrialSettings,
    budget: BudgetConfig,
    options: SearchOptions,
) -> None:
    """Retrain the top configurations over seeds (`analysis.confirmation_plan`) as a Tune
    experiment of its own (`runs.CONFIRM_DIR`), or continue an interrupted one.

    Its trials have the search's resources, checkpoints and retries, and run FIFO: each trains
    the full budget. A search trial that trained the full budget is its own first seed, so only
    the other seeds are trained. An earlier confirmation experiment continues first (which
    settles what a kill left of it); then the seeds that the plan names and no confirmation
    trial has run train, as a new experiment in the same folder (Tune restores the newest):
    those of a grown search's new top configurations (`driver.grow`).
    """
    from ray import tune

    folder = f"{tune_location(run_dir, options)}/{runs.CONFIRM_DIR}"
    if tune.Tuner.can_restore(folder):
        if not _all_completed(runs.confirm_dir(run_dir)):
            log.info("continuing the confirmation of %s over seeds", run_dir.name)
        finished = finished_trials(runs.confirm_dir(run_dir), run_dir, open_store(options))
        trainable = trainable_with_resources(
            data, settings, budget, options.trial_hook, run_dir, finished=finished
        )
        tuner = tune.Tuner.restore(
            folder, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        _finish_confirm(run_dir, fit(tuner, options, finished=finished), options)
    plan, configs = _seeds_to_train(run_dir)
    if not configs:
        return
    log.info(
        "confirming the top %d configurations over %d seeds: %d more full trials",
        len(plan),
        budget.confirm_seeds,
        len(configs),
    )
    trainable = trainable_with_resources(data, settings, budget, options.trial_hook, run_dir)
    tuner = _build_confirm_tuner(configs, trainable, run_dir, budget, options)
    _finish_confirm(run_dir, fit(tuner, options), options)


def _all_completed(folder: Path) -> bool:
    """Whether every trial in `folder` (a confirmation's) completed; true of none."""
    trials = runs.trial_dirs(folder) if folder.is_dir() else []
    return all(runs.read_trial_status(d).get("status") == runs.COMPLETED for d in trials)


def _seeds_to_train(run_dir: Path):
    """The confirmation plan, and the configuration of each of its seeds that no confirmation
    trial of the run has trained (each with `runs.SEED_KEY` and `runs.CONFIRMS_KEY`)."""
    from sentune.analysis import confirmation_plan

    run = runs.open_run(run_dir)
    plan = confirmation_plan(run)
    folder = runs.confirm_dir(run_dir)
    ran = {d.name for d in runs.trial_dirs(folder)} if folder.is_dir() else set()
    configs = [
        {**run.params[item.trial_id], runs.SEED_KEY: seed, runs.CONFIRMS_KEY: item.trial_id}
        for item in plan
        for seed in item.missing
        if runs.confirm_trial_name(item.trial_id, seed) not in ran
    ]
    return plan, configs


def _build_confirm_tuner(
    configs: list[dict[str, Any]], trainable, run_dir: Path, budget: BudgetConfig, options
):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    progress = progress_callback(
        total=len(configs),
        max_epochs=budget.max_epochs,
        rungs=[float(budget.max_epochs)],
        shown={runs.CONFIRMS_KEY, runs.SEED_KEY},
        run_dir=run_dir,
        first_step=False,  # the search's first step was said; the confirmation's is no news
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=config.VAL_MACRO_F1,
            mode=config.MODE,
            search_alg=config_list(configs),
            scheduler=FIFOScheduler(),
            num_samples=len(configs),
            max_concurrent_trials=budget.concurrency,
            reuse_actors=True,  # as in the search (`build_tuner`)
            trial_name_creator=_confirm_trial_name,
            trial_dirname_creator=_confirm_trial_name,
        ),
        run_config=run_config(
            runs.CONFIRM_DIR,
            tune_location(run_dir, options),
            progress,
            options,
            ledger=trial_ledger(
                runs.confirm_dir(run_dir), run_dir, open_store(options), hook=options.ledger_hook
            ),
            tracking=tracking_callback(run_dir, open_store(options), prefix=runs.CONFIRM_DIR),
        ),
    )


def _confirm_trial_name(trial) -> str:
    return runs.confirm_trial_name(trial.config[runs.CONFIRMS_KEY], trial.config[runs.SEED_KEY])


def _finish_confirm(run_dir: Path, grid, options: SearchOptions) -> None:
    """Keep each finished confirmation trial's best checkpoint only; say how to continue an
    interrupted confirmation or retry its errored trials."""
    store = open_store(options)
    storage.push(store, run_dir.name)
    storage.pull(store, run_dir.name, bodies=False)
    settle_unknown_trials(runs.confirm_dir(run_dir), run_dir, grid, store)
    folders = runs.trial_dirs(runs.confirm_dir(run_dir))
    statuses = {d.name: runs.read_trial_status(d).get("status") for d in folders}
    for folder in folders:
        if statuses[folder.name] == runs.COMPLETED:
            storage.delete(store, run_dir.name, runs.keep_best_checkpoint(folder))
    failed = sorted(name for name, status in statuses.items() if status == runs.ERROR)
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if unfinished or failed:
        log.warning(
            "the confirmation over seeds has %d unfinished and %d failed trial(s)%s; the winner "
            "is the best mean over the seeds that finished; continue it with: %s",
            unfinished,
            len(failed),
            f" ({', '.join(failed)})" if failed else "",
            resume_command(run_dir, options),
        )
