"""A search from start to finish: options checked, the data prepared in a second thread while Ray
starts in the main one (before any run folder exists, so bad input leaves nothing behind), the
run folder and manifest, the Tuner, the finish (best checkpoints kept, a killed search's
leftovers settled, resume hints), then the confirmation over seeds; and `resume`.

Fault tolerance: every evaluation hands Tune a checkpoint (weights plus training state), and Tune
keeps the best one and the latest one of each trial. A trial that raises or whose worker dies is
retried from its latest checkpoint (`max_failures` times), then recorded as errored while the
search goes on; `resume` continues an interrupted search from its folder. When the search is over,
each finished trial keeps only its best checkpoint, without the training state.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sentune import runs, tracking
from sentune.config import BudgetConfig, TrialSettings
from sentune.errors import ResourceError, RunError, SearchFailedError, SpaceError
from sentune.runs import storage
from sentune.search.preflight import (
    check_model,
    check_resources,
    max_length_for_data,
)
from sentune.search.resources import (
    cuda_mps,
    resolve_cpu_concurrency,
    resolve_cpus_per_trial,
    resolve_gpus_per_trial,
)
from sentune.search.strategies import (
    STRATEGIES,
    sampler_settings,
    strategy_name,
)
from sentune.space import (
    MaxLength,
    SearchSpec,
)

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData


from sentune.search import growth, legacy, warmstart
from sentune.search.cluster import LOOPBACK, check_address, ray_session
from sentune.search.confirm import run_confirmation
from sentune.search.options import SearchOptions
from sentune.search.recovery import finished_trials, load_study, settle_unknown_trials
from sentune.search.tuner import build_tuner, fit, quiet_unless_verbose, trainable_with_resources
from sentune.search.where import open_store, resume_command, tune_location

log = logging.getLogger(__name__)


def run(
    spec: SearchSpec, *, options: SearchOptions = SearchOptions(), warm_start: Path | None = None
) -> Path:
    """Run the search of `spec` and return its run folder (`<storage>/<space>-<timestamp>`, or
    `<storage>/<options.name>`).

    Args:
        spec: A validated search space.
        options: Where the search runs and writes.
        warm_start: An earlier run on the same data whose trials seed the study
            (`warmstart`): the sampler learns from them; they spend none of the budget.

    Returns:
        The run folder, holding Tune's results and the run manifest; `check_succeeded` says
        whether any trial of it succeeded.

    Raises:
        SentuneError: Bad input or an unwritable storage folder, before any run folder is left
            behind (a search that fails before any trial reported removes its folder).
    """
    options, run_dir = check_search(spec, options)
    source = warmstart.read_source(warm_start, spec) if warm_start is not None else None
    store = open_store(options)
    run_name = run_dir.name
    # Ray starts (here, in this thread) while another thread imports the model's libraries and
    # prepares the data: the two longest steps before the first trial, and they share nothing.
    with cuda_mps(options.mps), _beside_ray_start(options, _prepare, spec, options) as prepared:
        spec, data, model_path, max_length = prepared()
        warm = warmstart.select(source, spec, data) if source is not None else None
        settings = trial_settings(spec, model_path, options)
        strategy = STRATEGIES[options.strategy]
        # Before the clean-up on failure is armed: a folder that another search created
        # meanwhile is never this search's to remove.
        with _storage_errors(run_dir):
            run_dir = runs.create_run_dir(run_dir, named=options.name is not None)
        run_name = run_dir.name
        with _removed_unless_started(run_dir, options):
            with _storage_errors(run_dir):
                manifest = runs.new_manifest(
                    run_dir,
                    spec=spec,
                    data=data,
                    settings=settings,
                    strategy=options.strategy,
                    max_failures=options.max_failures,
                    address=options.address,
                    max_length=max_length.record(),
                    optuna_study=run_name if spec.params else None,
                    sampler=sampler_settings(strategy.sampler, spec.budget)
                    if spec.params
                    else None,
                    objective=spec.objective,
                    warm_start=warm.record() if warm is not None else None,
                )
                runs.write_manifest(run_dir, manifest)
                if warm is not None:
                    warmstart.seed_study(run_dir, spec, warm)
                storage.push(store, run_name)
            log.info(
                "search %s: %d trials, results in %s",
                run_name,
                spec.budget.trials,
                tune_location(run_dir, options),
            )
            _import_while_trials_run()
            with tracking.logged(run_dir, store, options.tracking):
                tuner = build_tuner(spec, data, settings, run_dir, strategy, options)
                grid = fit(tuner, options)
                if _finish(run_dir, grid, spec.budget, options):
                    run_confirmation(run_dir, data, settings, spec.budget, options)
    shutil.rmtree(runs.progress_dir(run_dir), ignore_errors=True)
    # The best checkpoints whole, for the report and the export that read the mirror.
    storage.pull(store, run_name)
    return run_dir


def check_search(spec: SearchSpec, options: SearchOptions) -> tuple[SearchOptions, Path]:
    """What a search settles before Ray starts and before any data is read (`run`, and
    `plan.build_plan` for `--dry-run`): the strategy and start time, the options, the address,
    this host's resources, the storage, and the run folder's name (free, not created).

    Returns:
        The options with `strategy` and `started_at` settled, and the run folder to create.

    Raises:
        SentuneError: Bad input, an unwritable storage or a taken `--name`.
    """
    options = replace(
        options,
        strategy=strategy_name(spec, options.strategy),
        started_at=options.started_at or time.time(),
    )
    _check_options(options)
    check_address(options.address)
    check_resources(spec, options)
    store = open_store(options)
    storage.check_writable(store)
    # Before the data is prepared: a taken or unsafe --name fails at once.
    run_dir = runs.new_run_dir(store.root, spec.name, name=options.name)
    if storage.run_exists(store, run_dir.name):
        raise RunError(
            f"--name {run_dir.name!r}: {store.tune_path(run_dir.name)} already exists; choose "
            f"another name, or continue it with `{resume_command(run_dir, options)}`"
        )
    return options, run_dir


def trial_settings(spec: SearchSpec, model_path: str, options: SearchOptions) -> TrialSettings:
    """The runtime settings of the search's trials (`spec` as `_prepare` made it concrete)."""
    return TrialSettings(
        model=model_path,
        max_epochs=spec.budget.max_epochs,
        evals_per_epoch=spec.budget.evals_per_epoch,
        precision=options.precision,
        device=options.device,
        num_threads=max(1, int(spec.budget.cpus_per_trial)),
        resumable=True,
        measure_latency=spec.objective.needs_latency,
        gpus_per_trial=spec.budget.gpus_per_trial,
        started_at=options.started_at,
    )


class _Prepared(NamedTuple):
    spec: SearchSpec
    data: PreparedData
    model_path: str
    max_length: MaxLength


def _prepare(spec: SearchSpec, options: SearchOptions) -> _Prepared:
    """The model found and checked against the space, the data tokenized, and what depends on
    both made concrete (`train.max_length: auto`, `budget.gpus_per_trial: auto`, and the
    concurrency that this host's memory holds)."""
    from sentune.data import prepare
    from sentune.train.encoders import resolve_model

    model_path = resolve_model(spec.model)
    check_model(spec, model_path)
    data = prepare(spec.data, model_path, cache_dir=options.cache_dir)
    # Once, before the run folder: trials and the manifest see the same concrete values.
    spec, max_length = max_length_for_data(spec, data, model_path)
    spec = replace(spec, budget=resolve_gpus_per_trial(spec, model_path, options))
    spec = replace(spec, budget=resolve_cpus_per_trial(spec.budget, options))
    spec = replace(spec, budget=resolve_cpu_concurrency(spec, model_path, options))
    return _Prepared(spec, data, model_path, max_length)


#: What the leaderboard and report import after a search (transformers' modeling code, and
#: scikit-learn for the fANOVA forests, the TF-IDF floor and the metrics: seconds each),
#: imported while the trials run, when this process mostly waits.
ANALYSIS_IMPORTS = (
    "sentune.train.model",
    "sentune.train.evaluate",
    "sentune.analysis",
    "sentune.analysis.importance",
    "sentune.report",
    "optuna.importance",
    "sklearn.metrics",
    "sklearn.linear_model",
    "sklearn.feature_extraction.text",
    "sklearn.pipeline",
    "plotly.graph_objects",
    "plotly.io",
    "plotly.subplots",
)


#: What building the `Tuner` imports (Ray Tune, Optuna, Ray's Optuna searcher and the
#: schedulers: ~2 s on 2 CPUs), imported once Ray has started, while the data is still being
#: prepared in the other thread, rather than after it.
TUNE_IMPORTS = (
    "ray.tune",
    "ray.tune.schedulers",
    "ray.tune.search.optuna",
    "optuna",
    "optuna.storages.journal",
)


def _import_while_trials_run() -> None:
    """Import `ANALYSIS_IMPORTS` in a daemon thread, so that the analysis after the search
    does not wait for them; one that fails is left to the analysis, which says why."""
    import threading

    threading.Thread(
        target=_import_ahead,
        args=(ANALYSIS_IMPORTS, "the analysis"),
        name="sentune-analysis-imports",
        daemon=True,
    ).start()


def _import_ahead(names: tuple[str, ...], needed_by: str) -> None:
    """Import `names` before `needed_by` does; one that fails is left to `needed_by`, which
    imports it again and says why."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - imported again where it is needed, which reports it
            log.debug("could not import %s ahead of %s", name, needed_by, exc_info=True)


def _reload(manifest: runs.Manifest, options: SearchOptions) -> tuple[str, PreparedData]:
    """A resumed run's model path and data. The model is resolved again: the run may continue
    on another machine."""
    from sentune.train.encoders import resolve_model

    model_path = resolve_model(manifest.model)
    data = runs.load_data(replace(manifest, model_path=model_path), cache_dir=options.cache_dir)
    return model_path, data


@contextmanager
def _beside_ray_start(options: SearchOptions, function: Callable[..., Any], *args):
    """Ray for the body of a `with` block (`ray_session`), started while `function(*args)` runs
    in another thread; yields a call that waits for that function's result (or raises its
    error).

    Ray starts in this thread, not the other: Linux ends the processes Ray starts (the GCS, the
    raylet) when the *thread* that started them ends (their parent-death signal), so Ray must
    start in the thread that outlives the search. A function that fails still waits for Ray's
    start (a few seconds) and its shutdown; bad input found before this block costs neither.
    Once Ray is up, this thread imports what the `Tuner` will need (`TUNE_IMPORTS`) if the
    function is still running.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sentune-prepare") as pool:
        future = pool.submit(function, *args)
        with ray_session(options):
            # The data takes longer than Ray on a GPU host (more so with long texts): this
            # thread would only wait for it.
            if not future.done():
                _import_ahead(TUNE_IMPORTS, "the Tuner")
            yield future.result


def resume(run_dir: Path, *, options: SearchOptions = SearchOptions()) -> Path:
    """Continue an interrupted search (driver killed, machine rebooted, Ctrl-C) from its folder.

    Finished trials are kept, unfinished and errored ones continue from their latest checkpoint,
    the searcher and scheduler continue from their saved state and the trial budget counts what
    already ran; then the confirmation over seeds runs, or continues where it was interrupted.
    The space, data, budget and trial settings are those of the run's manifest; of `options`
    only where Ray runs (`address`, dashboard, CPUs) and the token cache apply.

    Args:
        run_dir: `trials/<run>`, written by `run`.
        options: Where the search runs.

    Returns:
        The run folder.
    """
    from ray import tune

    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    # Before Ray Tune is imported: a wrong address or a missing token is said within seconds.
    options = replace(options, address=options.address or manifest.address)
    check_address(options.address)
    location = tune_location(run_dir, options)
    if not tune.Tuner.can_restore(location):
        raise RunError(
            f"{run_dir}: the search never started (no Tune state in it); start a new one with "
            f"`sentune search {manifest.space.name}`"
        )
    if not manifest.settings.resumable:
        raise RunError(f"{run_dir}: written by a sentune without resumable checkpoints; rerun it")
    budget = manifest.budget
    options = replace(options, started_at=options.started_at or time.time())
    log.info("resuming %s", location)
    quiet_unless_verbose(options)
    with cuda_mps(options.mps), _beside_ray_start(options, _reload, manifest, options) as reloaded:
        model_path, data = reloaded()
        settings = replace(manifest.settings, model=model_path, started_at=options.started_at)
        _import_while_trials_run()
        finished = finished_trials(
            run_dir,
            run_dir,
            open_store(options),
            study=load_study(run_dir, manifest),
            max_epochs=budget.max_epochs,
            evals_per_epoch=budget.evals_per_epoch,
        )
        legacy.install()  # a run made before the package split names the old paths
        tuner = tune.Tuner.restore(
            location,
            trainable=trainable_with_resources(
                data, settings, budget, options.trial_hook, run_dir, finished=finished
            ),
            resume_unfinished=True,
            resume_errored=True,
        )
        with tracking.logged(run_dir, open_store(options), options.tracking):
            grid = fit(tuner, options, finished=finished)
            if _finish(run_dir, grid, budget, options):
                run_confirmation(run_dir, data, settings, budget, options)
    shutil.rmtree(runs.progress_dir(run_dir), ignore_errors=True)
    storage.pull(open_store(options), run_dir.name)  # as at the end of `run`
    return run_dir


def grow(run_dir: Path, *, trials: int, options: SearchOptions = SearchOptions()) -> Path:
    """Add trials to a search that ended until its study has `trials` in all (`growth`): same
    space, data and settings (the manifest's), the sampler continuing from the run's journal;
    then the grown search's top configurations are confirmed over seeds.

    Args:
        run_dir: `trials/<run>`, written by `run`; every trial of it ended.
        trials: The new trial budget, a total: more than the run has run.
        options: Where the search runs (as for `resume`).

    Returns:
        The run folder.

    Raises:
        RunError: Trials still to finish, `trials` not above what ran, nothing searched, or the
            data changed since the search.
    """
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    options = replace(
        options, address=options.address or manifest.address, strategy=manifest.strategy
    )
    check_address(options.address)
    ran = growth.check_growth(
        run_dir, manifest, trials, resume_hint=resume_command(run_dir, options)
    )
    spec = growth.grown_spec(manifest, trials)
    options = replace(options, started_at=options.started_at or time.time())
    store = open_store(options)
    with cuda_mps(options.mps), _beside_ray_start(options, _reload, manifest, options) as reloaded:
        model_path, data = reloaded()
        settings = replace(manifest.settings, model=model_path, started_at=options.started_at)
        with _storage_errors(run_dir):
            growth.record_growth(run_dir, manifest, ran=ran, trials=trials)
            storage.push(store, run_dir.name)
        log.info(
            "growing %s from %d to %d trials, results in %s",
            run_dir.name,
            ran,
            trials,
            tune_location(run_dir, options),
        )
        _import_while_trials_run()
        # The added trials join the search's tracked runs (its parent run reopened, then ended).
        with tracking.logged(run_dir, store, options.tracking):
            tuner = build_tuner(
                growth.sampler_spec(spec, ran),
                data,
                settings,
                run_dir,
                STRATEGIES[options.strategy],
                options,
                ran=ran,
            )
            grid = fit(tuner, options)
            if _finish(run_dir, grid, spec.budget, options):
                run_confirmation(run_dir, data, settings, spec.budget, options)
    shutil.rmtree(runs.progress_dir(run_dir), ignore_errors=True)
    storage.pull(store, run_dir.name)  # as at the end of `run`
    return run_dir


def _check_options(options: SearchOptions) -> None:
    if options.max_failures < 0:
        raise SpaceError(
            f"--max-failures must be 0 or more, got {options.max_failures}; "
            "0 records a failed trial at once"
        )
    if options.dashboard and options.dashboard_host not in LOOPBACK:
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            raise ResourceError(
                f"--dashboard-host {options.dashboard_host} with RAY_AUTH_MODE=disabled would "
                "let anyone on the network run code here; unset RAY_AUTH_MODE (token auth) or "
                "keep the dashboard on 127.0.0.1 and tunnel to it"
            )
        log.warning(
            "the Ray dashboard will listen on %s; it is protected by Ray's token only",
            options.dashboard_host,
        )


@contextmanager
def _storage_errors(path: Path):
    """Turn a full disk or a forbidden folder into a `RunError` that says what to do."""
    try:
        yield
    except OSError as err:
        where = err.filename or path
        if err.errno == errno.ENOSPC:
            raise RunError(
                f"no space left on the device writing {where}; free some space or pass "
                "--storage on a larger disk"
            ) from None
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise RunError(
                f"cannot write {where} ({err.strerror}); pass a writable --storage"
            ) from None
        if err.errno in (errno.ENOTDIR, errno.ENOENT):
            raise RunError(
                f"cannot create {where} ({err.strerror}); pass a writable --storage folder"
            ) from None
        raise


@contextmanager
def _removed_unless_started(run_dir: Path, options: SearchOptions):
    """Remove the run folder if the search fails before any trial reported (no half-written
    run); otherwise say how to continue it."""
    try:
        yield
    except BaseException:
        store = open_store(options)
        if store.remote:
            try:
                storage.pull(store, run_dir.name, bodies=False)
            except Exception:  # noqa: BLE001 - the error being raised is the one to show
                pass
        if not runs.any_trial_reported(run_dir):
            storage.remove_run(store, run_dir.name)
        else:
            log.error("the search stopped; continue it with: %s", resume_command(run_dir, options))
        raise


def _finish(run_dir: Path, grid, budget: BudgetConfig, options: SearchOptions) -> bool:
    """Keep each finished trial's best checkpoint only; say how to continue an unfinished
    search or retry its errored trials.

    Returns:
        Whether the winner is to be confirmed over seeds: the search ran its whole trial
        budget and some trial succeeded.
    """
    store = open_store(options)
    storage.push(store, run_dir.name)
    storage.pull(store, run_dir.name, bodies=False)  # Ray Tune's files of a remote run
    settle_unknown_trials(run_dir, run_dir, grid, store)
    statuses = _trial_statuses(run_dir)
    for name, status in statuses.items():
        if status.get("status") == runs.COMPLETED:
            storage.delete(store, run_dir.name, runs.keep_best_checkpoint(run_dir / name))
    failed = [
        name
        for name, s in statuses.items()
        if s.get("status") == runs.ERROR and s.get("error") != runs.LOST_ERROR
    ]
    finished = sum(1 for s in statuses.values() if s.get("status") in (runs.COMPLETED, runs.ERROR))
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    interrupted = bool(unfinished or (budget.time_budget_s is None and finished < budget.trials))
    if interrupted:
        log.warning(
            "the search was interrupted with %d of %d trials finished; continue it with: %s",
            finished,
            budget.trials,
            resume_command(run_dir, options),
        )
    if failed:
        log.warning(
            "%d trial(s) failed (%s; reasons in the leaderboard's error column); retry them "
            "with: %s",
            len(failed),
            ", ".join(sorted(failed)),
            resume_command(run_dir, options),
        )
    return not interrupted and not _every_trial_failed(statuses)


def check_succeeded(run_dir: Path, *, options: SearchOptions = SearchOptions()) -> None:
    """Raise unless some trial of the ended search in `run_dir` succeeded (an unfinished trial
    counts as not failed: `resume` may finish it).

    Raises:
        SearchFailedError: Every trial failed; one line with the first failure's error and the
            command that retries the trials.
    """
    statuses = _trial_statuses(run_dir)
    if not _every_trial_failed(statuses):
        return
    first = min(statuses, key=lambda name: _recorded_at(run_dir / name))
    raise SearchFailedError(
        f"all {len(statuses)} trial(s) of {run_dir.name} failed; the first ({first}): "
        f"{statuses[first].get('error') or 'failed'}; once that is fixed, retry them with: "
        f"{resume_command(run_dir, options)}"
    )


def _trial_statuses(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The recorded outcome of each trial of the search (`runs.read_trial_status`), by name."""
    return {d.name: runs.read_trial_status(d) for d in runs.trial_dirs(run_dir)}


def _recorded_at(trial_dir: Path) -> float:
    """When the trial's outcome was recorded: its status file's time (which the mirror of a run
    in object storage keeps); trial names are random, so they do not say which failed first."""
    try:
        return (trial_dir / runs.TRIAL_STATUS).stat().st_mtime
    except OSError:
        return float("inf")


def _every_trial_failed(statuses: dict[str, dict[str, Any]]) -> bool:
    """Whether there were trials and all of them errored; a trial lost to a killed search
    keeps its results, so it does not count as failed."""
    return bool(statuses) and all(
        s.get("status") == runs.ERROR and s.get("error") != runs.LOST_ERROR
        for s in statuses.values()
    )
