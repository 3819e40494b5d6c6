"""Run a search: Ray Tune's `Tuner` with Optuna's TPE (via `OptunaSearch`) and ASHA.

It checks resources, prepares the data once (before any run folder exists, so bad input leaves
nothing behind), puts it in Ray's object store, writes the run manifest and lets Tune drive
`trial.run_trial` in each trial, then confirms the winner over seeds. The other modules that
import Ray serve it: `cluster.py` (Ray started or joined), `searchers.py` (the searchers and
schedulers) and `callbacks.py` (terminal lines, trial statuses).

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
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sentune import config, runs, storage
from sentune.callbacks import progress_callback, remember_status, settle_statuses, trial_ledger
from sentune.cluster import LOOPBACK, check_address, ray_session
from sentune.config import BudgetConfig, TrialSettings
from sentune.errors import ResourceError, RunError, SpaceError
from sentune.gpus import cuda_mps, resolve_cpu_concurrency, resolve_gpus_per_trial
from sentune.preflight import (
    check_model,
    check_resources,
    max_length_for_data,
)
from sentune.searchers import build_scheduler, build_searcher, config_list
from sentune.space import (
    MaxLength,
    SearchSpec,
)
from sentune.strategies import STRATEGIES, Strategy, sampler_settings, strategy_name

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData

log = logging.getLogger(__name__)

#: The ledger of a run started before `callbacks.py` existed calls the status recorder by this
#: name when Tune unpickles it to resume the run.
_remember_status = remember_status


@dataclass(frozen=True)
class SearchOptions:
    """Runtime options of a search: where it runs and writes, not what it searches.

    Attributes:
        address: A Ray cluster to join (`auto`, `ray://…`, `host:port`); None starts local Ray.
        storage: The folder that holds one subfolder per run, or an object-storage URI
            (`s3://bucket/prefix`, any pyarrow filesystem; `storage.py` mirrors it locally).
        precision: `auto`, `fp32`, `bf16` or `fp16` for every trial.
        device: `auto`, `cpu` or `cuda`.
        dashboard: Start the Ray dashboard (local runs).
        dashboard_host: The address it listens on; keep 127.0.0.1 and tunnel to it.
        dashboard_port: Its port (None: Ray's default, 8265).
        num_cpus: CPUs local Ray may use (None: all of this machine's).
        cache_dir: Where tokenized data is cached between searches.
        strategy: A name of `STRATEGIES` (sampler + scheduler); None: the space's sampler
            (TPE unless it names one) with ASHA.
        max_failures: Retries of a failed trial (from its latest checkpoint) before it is
            recorded as errored.
        verbose: Ray Tune's status tables, Ray's warnings and the trials' own output in the
            terminal; otherwise one line per trial event with an estimate (`progress.py`).
        name: The run folder's name (`<storage>/<name>`); None names it `<space>-<timestamp>`.
        trial_hook: Called in the trial's process after each report with the metrics and
            whether the trial continued from a checkpoint; what it raises fails the trial (the
            fault-tolerance tests inject failures through it). Pickled to the trial workers.
        mps: Run the trials under CUDA MPS (`cuda_mps`): packed trials then share the GPU's
            SMs at once rather than by time slices. Opt-in and not yet measured.
        started_at: When the command started (`time.time()`); trials report the seconds from
            then to their first step (`config.FIRST_STEP_S`). None: when `run` was called.
    """

    address: str | None = None
    storage: str | Path = config.STORAGE_DIR
    precision: str = TrialSettings.precision
    device: str = TrialSettings.device
    dashboard: bool = True
    dashboard_host: str = config.DASHBOARD_HOST
    dashboard_port: int | None = None
    num_cpus: int | None = None
    cache_dir: Path = Path(config.CACHE_DIR)
    strategy: str | None = None
    max_failures: int = config.MAX_FAILURES
    verbose: bool = False
    name: str | None = None
    trial_hook: Callable[[dict[str, Any], bool], None] | None = None
    mps: bool = False
    started_at: float | None = None


def run(spec: SearchSpec, *, options: SearchOptions = SearchOptions()) -> Path:
    """Run the search of `spec` and return its run folder (`<storage>/<space>-<timestamp>`, or
    `<storage>/<options.name>`).

    Args:
        spec: A validated search space.
        options: Where the search runs and writes.

    Returns:
        The run folder, holding Tune's results and the run manifest.

    Raises:
        SentuneError: Bad input or an unwritable storage folder, before any run folder is left
            behind (a search that fails before any trial reported removes its folder).
    """
    options = replace(
        options,
        strategy=strategy_name(spec, options.strategy),
        started_at=options.started_at or time.time(),
    )
    _check_options(options)
    check_address(options.address)
    check_resources(spec, options)
    store = _store(options)
    storage.check_writable(store)
    # Before the data is prepared: a taken or unsafe --name fails at once.
    run_dir = runs.new_run_dir(store.root, spec.name, name=options.name)
    run_name = run_dir.name
    if storage.run_exists(store, run_name):
        raise RunError(
            f"--name {run_name!r}: {store.tune_path(run_name)} already exists; choose another "
            f"name, or continue it with `{resume_command(run_dir, options)}`"
        )
    # Ray starts (here, in this thread) while another thread imports the model's libraries and
    # prepares the data: the two longest steps before the first trial, and they share nothing.
    with cuda_mps(options.mps), _beside_ray_start(options, _prepare, spec, options) as prepared:
        spec, data, model_path, max_length = prepared()
        settings = TrialSettings(
            model=model_path,
            max_epochs=spec.budget.max_epochs,
            precision=options.precision,
            device=options.device,
            num_threads=max(1, int(spec.budget.cpus_per_trial)),
            resumable=True,
            measure_latency=spec.objective.needs_latency,
            gpus_per_trial=spec.budget.gpus_per_trial,
            started_at=options.started_at,
        )
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
                )
                runs.write_manifest(run_dir, manifest)
                storage.push(store, run_name)
            log.info(
                "search %s: %d trials, results in %s",
                run_name,
                spec.budget.trials,
                _location(run_dir, options),
            )
            _import_while_trials_run()
            tuner = _build_tuner(spec, data, settings, run_dir, strategy, options)
            grid = _fit(tuner, options)
            if _finish(run_dir, grid, spec.budget, options):
                _confirm(run_dir, data, settings, spec.budget, options)
    shutil.rmtree(runs.progress_dir(run_dir), ignore_errors=True)
    # The best checkpoints whole, for the report and the export that read the mirror.
    storage.pull(store, run_name)
    return run_dir


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
    from sentune.encoders import resolve_model

    model_path = resolve_model(spec.model)
    check_model(spec, model_path)
    data = prepare(spec.data, model_path, cache_dir=options.cache_dir)
    # Once, before the run folder: trials and the manifest see the same concrete values.
    spec, max_length = max_length_for_data(spec, data, model_path)
    spec = replace(spec, budget=resolve_gpus_per_trial(spec, model_path, options))
    spec = replace(spec, budget=resolve_cpu_concurrency(spec, model_path, options))
    return _Prepared(spec, data, model_path, max_length)


#: What the leaderboard and report import after a search (transformers' modeling code among
#: them: seconds), imported while the trials run, when this process mostly waits.
ANALYSIS_IMPORTS = ("sentune.model", "sentune.evaluate", "sentune.analysis", "sentune.report")


def _import_while_trials_run() -> None:
    """Import `ANALYSIS_IMPORTS` in a daemon thread, so that the analysis after the search
    does not wait for them; one that fails is left to the analysis, which says why."""
    import importlib
    import threading

    def load() -> None:
        for name in ANALYSIS_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - imported again by the analysis, which reports it
                log.debug("could not import %s ahead of the analysis", name, exc_info=True)

    threading.Thread(target=load, name="sentune-analysis-imports", daemon=True).start()


def _reload(manifest: runs.Manifest, options: SearchOptions) -> tuple[str, PreparedData]:
    """A resumed run's model path and data. The model is resolved again: the run may continue
    on another machine."""
    from sentune.encoders import resolve_model

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
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sentune-prepare") as pool:
        future = pool.submit(function, *args)
        with ray_session(options):
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
    location = _location(run_dir, options)
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
    _quiet_unless_verbose(options)
    with cuda_mps(options.mps), _beside_ray_start(options, _reload, manifest, options) as reloaded:
        model_path, data = reloaded()
        settings = replace(manifest.settings, model=model_path, started_at=options.started_at)
        _import_while_trials_run()
        tuner = tune.Tuner.restore(
            location,
            trainable=_trainable_with_resources(
                data, settings, budget, options.trial_hook, run_dir
            ),
            resume_unfinished=True,
            resume_errored=True,
        )
        grid = _fit(tuner, options)
        if _finish(run_dir, grid, budget, options):
            _confirm(run_dir, data, settings, budget, options)
    shutil.rmtree(runs.progress_dir(run_dir), ignore_errors=True)
    storage.pull(_store(options), run_dir.name)  # as at the end of `run`
    return run_dir


def resume_command(run_dir: Path, options: SearchOptions) -> str:
    """The command line that continues the search in `run_dir`."""
    address = f" --address {options.address}" if options.address else ""
    store = _store(options)
    if store.remote:
        return f"sentune search --resume {run_dir.name} --storage {store.uri}{address}"
    return f"sentune search --resume {run_dir}{address}"


def _store(options: SearchOptions) -> storage.Storage:
    """Where the runs are kept (`options.storage`: a folder, or object storage mirrored)."""
    return storage.open_storage(options.storage, cache_dir=options.cache_dir)


def _location(run_dir: Path, options: SearchOptions) -> str:
    """Where Ray Tune keeps the run in `run_dir`: its URI in object storage, else the folder."""
    store = _store(options)
    return store.tune_path(run_dir.name) if store.remote else str(run_dir.resolve())


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
        store = _store(options)
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
        Whether the search ran its whole trial budget (only then is its winner confirmed).
    """
    store = _store(options)
    storage.push(store, run_dir.name)
    storage.pull(store, run_dir.name, bodies=False)  # Ray Tune's files of a remote run
    settle_statuses(store, run_dir, run_dir)
    _settle_unknown_trials(run_dir, run_dir, grid, store)
    statuses = {d.name: runs.read_trial_status(d) for d in runs.trial_dirs(run_dir)}
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
    return not interrupted


# --- confirmation over seeds ------------------------------------------------------------------


def _confirm(
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
    the other seeds are trained.
    """
    from ray import tune

    from sentune.analysis import confirmation_plan

    folder = f"{_location(run_dir, options)}/{runs.CONFIRM_DIR}"
    trainable = _trainable_with_resources(data, settings, budget, options.trial_hook, run_dir)
    if tune.Tuner.can_restore(folder):
        log.info("continuing the confirmation of %s over seeds", run_dir.name)
        tuner = tune.Tuner.restore(
            folder, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        run = runs.open_run(run_dir)
        plan = confirmation_plan(run)
        configs = [
            {**run.params[item.trial_id], runs.SEED_KEY: seed, runs.CONFIRMS_KEY: item.trial_id}
            for item in plan
            for seed in item.missing
        ]
        if not configs:
            return
        log.info(
            "confirming the top %d configurations over %d seeds: %d more full trials",
            len(plan),
            budget.confirm_seeds,
            len(configs),
        )
        tuner = _build_confirm_tuner(configs, trainable, run_dir, budget, options)
    grid = _fit(tuner, options)
    _finish_confirm(run_dir, grid, options)


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
            metric=config.OBJECTIVE,
            mode=config.MODE,
            search_alg=config_list(configs),
            scheduler=FIFOScheduler(),
            num_samples=len(configs),
            max_concurrent_trials=budget.concurrency,
            reuse_actors=True,  # as in the search (`_build_tuner`)
            trial_name_creator=_confirm_trial_name,
            trial_dirname_creator=_confirm_trial_name,
        ),
        run_config=_run_config(
            runs.CONFIRM_DIR,
            _location(run_dir, options),
            progress,
            options,
            ledger=trial_ledger(runs.confirm_dir(run_dir), run_dir, _store(options)),
        ),
    )


def _confirm_trial_name(trial) -> str:
    return runs.confirm_trial_name(trial.config[runs.CONFIRMS_KEY], trial.config[runs.SEED_KEY])


def _finish_confirm(run_dir: Path, grid, options: SearchOptions) -> None:
    """Keep each finished confirmation trial's best checkpoint only; say how to continue an
    interrupted confirmation or retry its errored trials."""
    store = _store(options)
    storage.push(store, run_dir.name)
    storage.pull(store, run_dir.name, bodies=False)
    settle_statuses(store, run_dir, runs.confirm_dir(run_dir))
    _settle_unknown_trials(runs.confirm_dir(run_dir), run_dir, grid, store)
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


def _settle_unknown_trials(folder: Path, run_dir: Path, grid, store: storage.Storage) -> None:
    """What a killed search left in `folder` that the experiment's saved state never held:
    a trial with results is recorded as lost (`runs.LOST_ERROR`: it counts as finished, keeps
    its best checkpoint without the training state, and is said once); a checkpoint without
    results is deleted (`runs.orphan_trial_dirs`); here and in object storage."""
    known = {Path(result.path).name for result in grid}
    lost = runs.lost_trial_dirs(folder, known)
    for trial_dir in lost:
        runs.write_trial_status(trial_dir, runs.ERROR, failures=0, error=runs.LOST_ERROR)
        storage.push(store, run_dir.name, [trial_dir / runs.TRIAL_STATUS])
        storage.delete(store, run_dir.name, runs.keep_best_checkpoint(trial_dir))
    if lost:
        log.warning(
            "%d trial(s) were lost when the search was killed (%s): Ray Tune had not saved "
            "them; their results are kept, --resume cannot continue them",
            len(lost),
            ", ".join(d.name for d in lost),
        )
    orphans = runs.orphan_trial_dirs(folder, known)
    if orphans:
        log.info(
            "removing the checkpoints of %d trial(s) that a killed search started but never "
            "recorded: %s",
            len(orphans),
            ", ".join(d.name for d in orphans),
        )
        storage.delete(store, run_dir.name, orphans)
        for orphan in orphans:
            shutil.rmtree(orphan, ignore_errors=True)


def _trainable_with_resources(
    data: PreparedData, settings: TrialSettings, budget: BudgetConfig, hook, run_dir: Path
):
    from ray import tune

    trainable = tune.with_parameters(
        _trainable, data=data, settings=settings, hook=hook, progress_dir=_progress_dir(run_dir)
    )
    return tune.with_resources(
        trainable, {"cpu": budget.cpus_per_trial, "gpu": budget.gpus_per_trial}
    )


def _progress_dir(run_dir: Path) -> str:
    """`runs.progress_dir`, made: the search's process makes it, so that only trials on this
    machine (the default) write there; a trial on another node of a cluster finds no such
    folder and its epochs only show their evaluations."""
    folder = runs.progress_dir(run_dir).resolve()
    folder.mkdir(exist_ok=True)
    return str(folder)


def _build_tuner(
    spec: SearchSpec,
    data: PreparedData,
    settings: TrialSettings,
    run_dir: Path,
    strategy: Strategy,
    options: SearchOptions,
):
    from ray import tune

    _quiet_unless_verbose(options)
    budget = spec.budget
    trainable = _trainable_with_resources(data, settings, budget, options.trial_hook, run_dir)
    return tune.Tuner(
        trainable,
        # The searcher draws the searched parameters (define-by-run, conditions honoured);
        # Tune's own config holds the fixed ones only.
        param_space=dict(spec.fixed),
        tune_config=tune.TuneConfig(
            metric=config.OBJECTIVE,
            mode=config.MODE,
            search_alg=build_searcher(strategy.sampler, spec, run_dir),
            scheduler=build_scheduler(strategy.scheduler, spec),
            num_samples=budget.trials,
            max_concurrent_trials=budget.concurrency,
            time_budget_s=budget.time_budget_s,
            # A finished trial's worker takes the next trial: no new process, imports, CUDA
            # context or encoder read. Measured on 2 CPUs, 4 sequential tiny trials: 40 s -> 15 s,
            # with identical losses per configuration (tests/test_search.py checks it).
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=_run_config(
            run_dir.name,
            _store(options).uri or str(run_dir.resolve().parent),
            _progress_reporter(spec, options, run_dir),
            options,
            ledger=trial_ledger(run_dir, run_dir, _store(options)),
        ),
    )


def _run_config(name: str, storage_path: str, progress, options: SearchOptions, *, ledger):
    """Where a Tune experiment writes (`<storage_path>/<name>`: a folder or a URI), its
    checkpoints, retries and callbacks: the same for the search and its confirmation."""
    from ray import tune

    return tune.RunConfig(
        name=name,
        # A URI is resolved by pyarrow on each node, with that node's credentials.
        storage_path=storage_path,
        # Ray keeps the top `num_to_keep` checkpoints by score and, always, the latest one:
        # the best for export, the latest to continue from. `_finish` drops the latest of
        # finished trials.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1,
            checkpoint_score_attribute=config.OBJECTIVE,
            checkpoint_score_order=config.MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        callbacks=[ledger, progress],
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
):
    """The Tune function trainable: `run_trial` with a callback that reports to Tune, and one
    that writes where each epoch stands to `progress_dir` (`progress.ProgressFile`)."""
    from ray import tune
    from transformers.utils import logging as hf_logging

    from sentune.progress import ProgressFile
    from sentune.trial import run_trial

    # Set here, in the worker, so that it holds on any cluster (`--address` included).
    os.environ.setdefault(WIND_DOWN_WAIT_ENV, str(WIND_DOWN_WAIT_S))
    # One progress bar per weight load and save would flood the driver's log.
    hf_logging.disable_progress_bar()
    workdir = Path(tempfile.mkdtemp(prefix="sentune-trial-"))

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
        shutil.rmtree(workdir, ignore_errors=True)


#: Ray Tune's switch between its output engines (read when `Tuner.fit` starts).
_TUNE_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


def _fit(tuner, options: SearchOptions):
    """`tuner.fit()` (`_fit_quietly`), with an out-of-memory kill said in one line.

    Ray kills a worker when the host runs low on memory. Tune retries a trial killed while it
    trains, but a kill while a trial's worker starts ends `fit` with Ray's `OutOfMemoryError`
    inside a `RuntimeError` and pages of Ray's report; this raises a `ResourceError` that says
    what to lower instead (the run folder is then kept or removed as for any failure).
    """
    try:
        return _fit_quietly(tuner, options)
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


def _fit_quietly(tuner, options: SearchOptions):
    """`tuner.fit()`, printing nothing of Tune's own unless `options.verbose`.

    Tune's new output engine prints an experiment box and a TensorBoard hint at every start
    whatever `verbose` says (Ray 2.60 `tune.run` calls `experiment_started` unconditionally);
    its legacy engine honours `verbose=0`. The switch is an environment variable, so it is
    set for the call only.
    """
    if options.verbose:
        return tuner.fit()
    saved = os.environ.get(_TUNE_NEW_OUTPUT)
    os.environ[_TUNE_NEW_OUTPUT] = "0"
    try:
        return tuner.fit()
    finally:
        if saved is None:
            os.environ.pop(_TUNE_NEW_OUTPUT, None)
        else:
            os.environ[_TUNE_NEW_OUTPUT] = saved


def _quiet_unless_verbose(options: SearchOptions) -> None:
    """Unless `options.verbose`, silence Ray Tune's repeated warnings (e.g. "Experiment state
    snapshotting ...") and Optuna's per-study and per-trial info lines: the progress lines
    (`_progress_reporter`) are the terminal view. Before the searcher is built: it creates the
    study."""
    if options.verbose:
        return
    import optuna

    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _progress_reporter(spec: SearchSpec, options: SearchOptions, run_dir: Path):
    """A Tune callback that prints one line per trial event with an estimate (`progress.py`)."""
    from sentune.analysis import asha_rungs

    return progress_callback(
        total=spec.budget.trials,
        max_epochs=spec.budget.max_epochs,
        rungs=asha_rungs(spec.budget, options.strategy),
        shown=set(spec.params),
        run_dir=run_dir,
        time_budget_s=spec.budget.time_budget_s,
    )
