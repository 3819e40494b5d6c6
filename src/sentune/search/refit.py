"""The refit: the winner's configuration retrained on the whole training split, when the search
trained on a sample of it (`data.train_size`), as a Tune experiment of its own inside the run
(`runs.refit_dir`), so that it runs where the search ran (a GPU, a cluster), checkpoints each
evaluation and continues after a kill.

The validation split is the search's, the best evaluation is kept as in a trial, and the test
split stays unseen. The seed is the configuration's own (the one its search trial trained with):
taking the confirmation seed that scored best on validation would be one more selection on the
validation split, and the validation score shown beside the test score would be optimistic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sentune import config, runs
from sentune.errors import RunError
from sentune.runs import storage

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData


from sentune.search.callbacks import progress_callback, trial_ledger
from sentune.search.cluster import check_address, ray_session
from sentune.search.options import SearchOptions
from sentune.search.recovery import finished_trials, settle_unknown_trials
from sentune.search.searcher import config_list
from sentune.search.tuner import fit, quiet_unless_verbose, run_config, trainable_with_resources
from sentune.search.where import open_store, tune_location

log = logging.getLogger(__name__)


def needs_refit(manifest: runs.Manifest) -> bool:
    """Whether the search trained on a sample of the training split (`data.train_size`)."""
    stats = manifest.data.stats
    sampled = stats.get("available_sizes", {}).get("train")
    return manifest.data.config.train_size is not None and (
        sampled is None or sampled > manifest.data.config.train_size
    )


def refit(
    run_dir: Path,
    trial_id: str,
    *,
    options: SearchOptions = SearchOptions(),
    force: bool = False,
) -> runs.Refit:
    """Retrain `trial_id`'s configuration on the whole training split, or continue (or reuse)
    an earlier refit of it.

    Args:
        run_dir: `trials/<run>`.
        trial_id: A search trial of the run (its configuration and seed are retrained).
        options: Where Ray runs (`address`, CPUs) and the token cache; the run's manifest gives
            the rest (model, data, epochs, precision, resources).
        force: Train again even if a finished refit of this trial is there.

    Raises:
        RunError: The data changed since the search, the trial is unknown, or the refit failed.
    """
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    options = replace(options, address=options.address or manifest.address)
    check_address(options.address)
    run = runs.open_run(run_dir)
    if trial_id not in run.params:
        raise RunError(
            f"{run_dir}: no trial {trial_id!r} to refit; its trials: {sorted(run.params)}"
        )
    folder = runs.refit_dir(run_dir, trial_id)
    done = runs.finished_refit(run_dir, trial_id)
    if done is not None and not force:
        log.info("refit of trial %s found in %s: %s", trial_id, folder, refit_summary(done.record))
        return done
    if force:
        runs.remove_refit(folder)
        storage.delete(open_store(options), run_dir.name, [folder])
    options = replace(options, started_at=options.started_at or time.time())
    quiet_unless_verbose(options)
    model_path, data = _full_data(manifest, options)
    budget = manifest.budget
    settings = replace(
        manifest.settings,
        model=model_path,
        measure_latency=False,  # the export measures the shipped model's latency
        started_at=options.started_at,
    )
    params = {**run.params[trial_id], runs.REFITS_KEY: trial_id}
    record = {
        "trial_id": trial_id,
        "train_size": len(data.train),
        "search_train_size": manifest.data.config.train_size,
        "validation_size": len(data.validation),
        "max_epochs": budget.max_epochs,
        "seed": runs.trial_seed(params),
        "seed_rule": "the configuration's own seed, that of its search trial, not chosen by score",
        "data_fingerprint": data.fingerprint,
        "search_data_fingerprint": manifest.data.fingerprint,
    }
    _check_record(folder, record)
    estimate = _estimate_s(run.histories.values(), len(data.train), budget.max_epochs)
    log.info(
        "refit of trial %s on all %d training examples (the search used %d), %d epoch(s), "
        "seed %d%s",
        trial_id,
        len(data.train),
        manifest.data.config.train_size,
        budget.max_epochs,
        record["seed"],
        f"; estimated {_duration(estimate)}" if estimate else "",
    )
    location = f"{tune_location(run_dir, options)}/{folder.name}"
    started = time.time()
    with ray_session(options):
        from ray import tune

        folder.mkdir(parents=True, exist_ok=True)
        runs.write_json(_record_path(folder), record)
        finished = frozenset()
        if tune.Tuner.can_restore(location):
            log.info("continuing the interrupted refit in %s", folder)
            finished = finished_trials(folder, run_dir, open_store(options))
            trainable = trainable_with_resources(
                data, settings, budget, options.trial_hook, run_dir, finished=finished
            )
            tuner = tune.Tuner.restore(
                location, trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            trainable = trainable_with_resources(
                data, settings, budget, options.trial_hook, run_dir
            )
            tuner = _build_tuner(params, trainable, run_dir, folder, budget, options)
        grid = fit(tuner, options, finished=finished)
        _settle(run_dir, folder, grid, options)
    trial_dir = folder / trial_id
    status = runs.read_trial_status(trial_dir)
    if status.get("status") != runs.COMPLETED:
        reason = status.get("error") or "interrupted before its last epoch"
        raise RunError(
            f"the refit of trial {trial_id} did not finish ({reason}); run the same command "
            "again to continue it from its last checkpoint"
        )
    history = runs.open_trials(folder, manifest).histories.get(trial_id, pd.DataFrame())
    record = {**record, **_history_scores(history), "wall_s": round(time.time() - started, 1)}
    runs.write_json(_record_path(folder), record)
    storage.push(open_store(options), run_dir.name, [_record_path(folder)])
    done = runs.finished_refit(run_dir, trial_id)
    assert done is not None  # completed, with its best checkpoint kept
    log.info("refit of trial %s done: %s", trial_id, refit_summary(done.record))
    return done


# --- the data and the estimate -----------------------------------------------------------------


def _full_data(manifest: runs.Manifest, options: SearchOptions) -> tuple[str, PreparedData]:
    """The model path and the run's data with the whole training split. The search's own data
    is rebuilt first: a source that changed since the search fails here (`runs.load_data`)."""
    from sentune.data import prepare
    from sentune.train.encoders import resolve_model

    model_path = resolve_model(manifest.model)
    manifest = replace(manifest, model_path=model_path)
    searched = runs.load_data(manifest, cache_dir=options.cache_dir)
    full = prepare(
        replace(manifest.data.config, train_size=None), model_path, cache_dir=options.cache_dir
    )
    same = (
        searched.validation.texts == full.validation.texts
        and searched.test.texts == full.test.texts
    )
    if not same:  # the subsample of the training split never moves the other splits
        raise RunError(
            f"run {manifest.run}: the validation or test split rebuilt without data.train_size "
            "differs from the search's; refit cannot keep the search's splits (export with "
            "--no-refit)"
        )
    return model_path, full


def _estimate_s(histories, train_size: int, epochs: int) -> float | None:
    """Seconds to train `epochs` epochs of `train_size` examples, at the fastest training speed a
    trial of the run measured (same encoder and data; the slower ones shared the machine or had
    a larger head), evaluations left out (the validation split is the search's)."""
    speeds = [
        float(h[config.TRAIN_SAMPLES_PER_S].max())
        for h in histories
        if config.TRAIN_SAMPLES_PER_S in h and h[config.TRAIN_SAMPLES_PER_S].notna().any()
    ]
    if not speeds or max(speeds) <= 0:
        return None
    return epochs * train_size / max(speeds)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"


# --- the Tune experiment -----------------------------------------------------------------------


def _build_tuner(params, trainable, run_dir: Path, folder: Path, budget, options: SearchOptions):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    progress = progress_callback(
        total=1,
        max_epochs=budget.max_epochs,
        rungs=[float(budget.max_epochs)],
        shown={runs.REFITS_KEY},
        run_dir=run_dir,
    )
    trial_id = folder.name.removeprefix(runs.REFIT_PREFIX)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=config.VAL_MACRO_F1,
            mode=config.MODE,
            search_alg=config_list([params]),
            scheduler=FIFOScheduler(),
            num_samples=1,
            max_concurrent_trials=1,
            trial_name_creator=lambda _: trial_id,
            trial_dirname_creator=lambda _: trial_id,
        ),
        run_config=run_config(
            folder.name,
            tune_location(run_dir, options),
            progress,
            options,
            ledger=trial_ledger(folder, run_dir, open_store(options), hook=options.ledger_hook),
        ),
    )


def _settle(run_dir: Path, folder: Path, grid, options: SearchOptions) -> None:
    """As a search's finish: the statuses settled, a finished refit's best checkpoint kept."""
    store = open_store(options)
    storage.push(store, run_dir.name)
    storage.pull(store, run_dir.name, bodies=False)
    settle_unknown_trials(folder, run_dir, grid, store)
    for trial_dir in runs.trial_dirs(folder):
        if runs.read_trial_status(trial_dir).get("status") == runs.COMPLETED:
            storage.delete(store, run_dir.name, runs.keep_best_checkpoint(trial_dir))
    storage.pull(store, run_dir.name)


# --- the record --------------------------------------------------------------------------------


def _record_path(folder: Path) -> Path:
    return folder / runs.REFIT_FILE


def _check_record(folder: Path, record: dict[str, Any]) -> None:
    """An interrupted refit continues only on the same data and configuration."""
    path = _record_path(folder)
    if not path.is_file():
        return
    earlier = runs.read_json(path)
    keys = ("data_fingerprint", "seed", "max_epochs", "train_size")
    changed = [k for k in keys if earlier.get(k) != record[k]]
    if changed:
        raise RunError(
            f"{folder}: the refit there was made with other {', '.join(changed)} "
            f"({', '.join(f'{k} {earlier.get(k)}' for k in changed)}); pass --force to refit "
            "again from the start"
        )


def _history_scores(history: pd.DataFrame) -> dict[str, Any]:
    """The refit's validation macro-F1 at each evaluation, and its best epoch."""
    if history.empty:
        return {}
    best = history.loc[history[config.VAL_MACRO_F1].idxmax()]
    return {
        "val_macro_f1_by_epoch": {
            f"{float(e):g}": round(float(v), 4)
            for e, v in zip(history[config.EPOCH], history[config.VAL_MACRO_F1], strict=True)
        },
        "best_epoch": float(best[config.EPOCH]),
        config.VAL_MACRO_F1: float(best[config.VAL_MACRO_F1]),
    }


def refit_summary(record: dict[str, Any]) -> str:
    """A refit's record in words: its best validation macro-F1, epoch, size and wall time."""
    if config.VAL_MACRO_F1 not in record:
        return "no evaluation"
    return (
        f"validation macro-F1 {record[config.VAL_MACRO_F1]:.4f} at epoch "
        f"{record['best_epoch']:g} on {record['train_size']} training examples "
        f"({_duration(record['wall_s'])})"
    )
