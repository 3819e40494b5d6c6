"""Run a search: Ray Tune's `Tuner` with Optuna's TPE (via `OptunaSearch`) and ASHA.

It checks resources, prepares the data once (before any run folder exists, so bad input leaves
nothing behind), puts it in Ray's object store, writes the run manifest and lets Tune drive
`trial.run_trial` in each trial, then confirms the winner over seeds. The only module that knows
Ray (DESIGN.md): it also starts or joins Ray and checks `--address`, builds the searchers and
schedulers, and holds the Tune callbacks (terminal lines, trial statuses); each of those is a
section below, and Ray is imported inside functions, so that importing this module does not.

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
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sentune import config, runs
from sentune.config import BudgetConfig, TrialSettings
from sentune.errors import ResourceError, RunError, SpaceError
from sentune.gpus import cuda_mps, resolve_cpu_concurrency, resolve_gpus_per_trial
from sentune.preflight import (
    check_model,
    check_resources,
    max_length_for_data,
)
from sentune.runs import storage
from sentune.space import (
    MaxLength,
    SearchSpec,
)
from sentune.strategies import STRATEGIES, Strategy, build_sampler, sampler_settings, strategy_name
from sentune.train import scratch

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    from sentune.data import PreparedData

log = logging.getLogger(__name__)


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
        ledger_hook: Called in the search's process by the trial ledger (`trial_ledger`) as
            it records a trial's outcome: `("before-status", trial)` once the journal has it
            and before the status is written, `("after-status", trial)` once the status is
            stored. The kill-and-resume tests kill the driver there. Pickled with Tune's state.
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
    ledger_hook: Callable[[str, Any], None] | None = None
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
    from sentune.train.encoders import resolve_model

    model_path = resolve_model(spec.model)
    check_model(spec, model_path)
    data = prepare(spec.data, model_path, cache_dir=options.cache_dir)
    # Once, before the run folder: trials and the manifest see the same concrete values.
    spec, max_length = max_length_for_data(spec, data, model_path)
    spec = replace(spec, budget=resolve_gpus_per_trial(spec, model_path, options))
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
        finished = finished_trials(
            run_dir,
            run_dir,
            _store(options),
            study=_study_of(run_dir, manifest),
            max_epochs=budget.max_epochs,
        )
        tuner = tune.Tuner.restore(
            location,
            trainable=_trainable_with_resources(
                data, settings, budget, options.trial_hook, run_dir, finished=finished
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
    if tune.Tuner.can_restore(folder):
        log.info("continuing the confirmation of %s over seeds", run_dir.name)
        finished = finished_trials(runs.confirm_dir(run_dir), run_dir, _store(options))
        trainable = _trainable_with_resources(
            data, settings, budget, options.trial_hook, run_dir, finished=finished
        )
        tuner = tune.Tuner.restore(
            folder, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        trainable = _trainable_with_resources(data, settings, budget, options.trial_hook, run_dir)
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
            ledger=trial_ledger(
                runs.confirm_dir(run_dir), run_dir, _store(options), hook=options.ledger_hook
            ),
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
        progress_dir=_progress_dir(run_dir),
        finished=finished,
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
            ledger=trial_ledger(run_dir, run_dir, _store(options), hook=options.ledger_hook),
        ),
    )


def _run_config(name: str, storage_path: str, progress, options: SearchOptions, *, ledger):
    """Where a Tune experiment writes (`<storage_path>/<name>`: a folder or a URI), its
    checkpoints, retries and callbacks: the same for the search and its confirmation."""
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
            checkpoint_score_attribute=config.OBJECTIVE,
            checkpoint_score_order=config.MODE,
        ),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        # Ray's JSON logger writes each result into the trial's staging before the ledger
        # stores it (Tune would add the logger after the ledger otherwise).
        callbacks=[JsonLoggerCallback(), ledger, progress],
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

    from sentune.progress import ProgressFile
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


# --- Ray started (services on loopback) or joined; the --address check ---------------------------


#: Hosts that keep the Ray dashboard off the network.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


#: `host:port` of a Ray head (a name, an IPv4 address or a bracketed IPv6 one).
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})")


#: A cheap GCS call that any Ray head answers; its status says whether the head wants a token.
_GCS_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"


#: What to do on a cluster that wants Ray's token: the one-line fix, said once.
_TOKEN_FIX = (
    "run `ray get-auth-token` on the head, then here `export RAY_AUTH_MODE=token` and put the "
    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
)


def check_address(address: str | None) -> None:
    """Check a cluster address before Ray joins it, within twice `config.ADDRESS_TIMEOUT_S`: its
    form, that the head's port answers, and (for a `host:port` GCS address) that the head
    accepts what this machine would send, token or none.

    Ray on its own retries a wrong address or a missing token for about 20 s and then raises;
    this says the fix in one line instead. `auto` (and None: local Ray) is Ray's to find.

    Raises:
        ResourceError: A malformed or unreachable address, or a head that wants a token which
            this machine does not send (or sends wrong).
    """
    if address is None or address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    match = _HOST_PORT.fullmatch(address.removeprefix("ray://"))
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536:
        raise ResourceError(
            f"--address {address!r}: write the head's host:port (e.g. 10.0.0.5:6379), "
            "ray://host:10001 or auto"
        )
    host = match["host"].strip("[]")
    try:
        socket.create_connection((host, port), timeout=config.ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise ResourceError(
            f"--address {address}: cannot reach {host}:{port} ({reason}); start the head there "
            f"(`ray start --head --port {port}`) or fix the address, and open the port in the "
            "firewall"
        ) from None
    if not client:  # a Ray Client server speaks its own protocol; Ray checks it on connect
        _check_token(address, host, port)


def _check_token(address: str, host: str, port: int) -> None:
    """One GCS call with the token Ray would send (none unless RAY_AUTH_MODE=token): a head
    that answers UNAUTHENTICATED wants a token this machine does not have."""
    import grpc

    headers = _ray_token_headers()
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.insecure_channel(target)
    try:
        probe = channel.unary_unary(_GCS_PROBE)
        probe(b"", timeout=config.ADDRESS_TIMEOUT_S, metadata=headers)
    except grpc.RpcError as err:
        code = err.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            if headers:
                raise ResourceError(
                    f"--address {address}: the cluster refused this machine's Ray token; "
                    + _TOKEN_FIX.replace("put the token", "put the head's token")
                ) from None
            raise ResourceError(
                f"--address {address}: the cluster wants Ray's auth token and none is set "
                f"here; {_TOKEN_FIX}"
            ) from None
        # Every Ray head since 2.7 answers this call; anything else is another service.
        raise ResourceError(
            f"--address {address}: {host}:{port} does not answer as a Ray head ({code.name}); "
            "pass the head's GCS port (6379 unless `ray start --port` chose another; "
            "`ray status` on the head prints it)"
        ) from None
    finally:
        channel.close()


def _ray_token_headers() -> list[tuple[str, str]]:
    """The gRPC metadata Ray's own client would add: the token when RAY_AUTH_MODE=token.

    Wraps Ray 2.60's private `ray._raylet` token loader (the one `ray.init` uses), so that the
    probe sends exactly what joining will send. Ray takes the mode from the environment only
    (`ray._private.authentication.authentication_token_setup`); without RAY_AUTH_MODE=token it
    sends no token, which is known without importing Ray (a second or more on a busy machine).

    Raises:
        ResourceError: RAY_AUTH_MODE=token but no token is found.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return []
    from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode

    if get_authentication_mode() != AuthenticationMode.TOKEN:
        return []
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token():
        raise ResourceError(f"RAY_AUTH_MODE=token but no Ray token is found; {_TOKEN_FIX}")
    return [(k.lower(), v) for k, v in loader.get_token_for_http_header().items()]


@contextmanager
def ray_session(options: SearchOptions):
    """Ray for the body of a `with` block: joined or started by `start_ray`, and shut down after
    it when this call started it (Ray already running in this process is left running).

    Args:
        options: The cluster address, CPUs and dashboard of a local Ray.
    """
    context = start_ray(options)
    try:
        yield
    finally:
        if context is not None:
            import ray

            ray.shutdown()
        # The folders of the trials Ray ended by ending their workers (on this node).
        scratch.sweep()


#: The Ray module that says, at every local start, that token authentication is on.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def start_ray(options: SearchOptions):
    """Join a cluster, or start local Ray with every service on 127.0.0.1.

    Returns the Ray context when this call started or joined Ray (and so must shut it down),
    None when Ray was already running in this process.
    """
    import ray

    if ray.is_initialized():
        return None
    if options.address is None:
        _keep_ray_on_loopback()
        if not options.verbose:
            # Ray's notice that it turned its token authentication on (as it should: kept on).
            logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        # "local" always starts a new Ray: without it, Ray joins whatever cluster
        # /tmp/ray/ray_current_cluster names, even one that is long gone.
        context = ray.init(
            address="local",
            num_cpus=options.num_cpus,
            include_dashboard=options.dashboard,
            dashboard_host=options.dashboard_host,
            dashboard_port=options.dashboard_port,
            configure_logging=False,
            log_to_driver=options.verbose,
        )
    else:
        context = ray.init(address=options.address, configure_logging=False)
    url = getattr(context, "dashboard_url", None)
    if url:
        log.info("Ray dashboard: http://%s", url.removeprefix("http://"))
    return context


def _keep_ray_on_loopback() -> None:
    """On Linux Ray binds its services to the host's network address even for a local run.

    Ray's single-machine mode (the one it uses on macOS and Windows) keeps every service on
    127.0.0.1. The switch is an environment variable that Ray reads when it is imported: the
    processes Ray starts inherit it, and this process's copy of the constant is set directly in
    case Ray was imported before.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# --- the Tune searchers and schedulers -----------------------------------------------------------


def config_list(configs: list[dict[str, Any]]):
    """A Tune searcher that hands out `configs` whole, one per trial, in order.

    Ray's `BasicVariantGenerator(points_to_evaluate=…)` only fills keys that its param space
    already has, and the configurations differ in which conditional keys they hold. Its state
    (what it has handed out) is pickled with the experiment, so a resumed confirmation does not
    start a configuration twice. Defined on first use so that importing this module does not
    import Ray Tune.
    """
    import pickle

    from ray.tune.search import Searcher

    class ConfigList(Searcher):
        def __init__(self, configs: list[dict[str, Any]]):
            super().__init__(metric=config.OBJECTIVE, mode=config.MODE)
            self._configs = [dict(c) for c in configs]
            self._given = 0

        def suggest(self, trial_id: str):
            if self._given >= len(self._configs):
                return Searcher.FINISHED
            self._given += 1
            return dict(self._configs[self._given - 1])

        def on_trial_complete(self, trial_id: str, result=None, error=False):
            pass  # nothing to learn: every configuration is given

        def save(self, checkpoint_path: str):
            with open(checkpoint_path, "wb") as file:
                pickle.dump(self.__dict__, file)

        def restore(self, checkpoint_path: str):
            with open(checkpoint_path, "rb") as file:
                self.__dict__.update(pickle.load(file))

    return ConfigList(configs)


def build_searcher(sampler: str, spec: SearchSpec, run_dir: Path):
    """Optuna's sampler, seeded, behind Ray's `OptunaSearch`, its study kept in the run's
    journal (None when nothing is searched)."""
    if not spec.params:
        return None
    objective = spec.objective
    return _journal_searcher_class()(
        journal=runs.optuna_journal(run_dir.resolve()),
        max_epochs=spec.budget.max_epochs,
        trials=spec.budget.trials,
        objective=objective,
        space=spec.define_by_run(),
        metric=list(objective.metrics) if objective.multi else config.OBJECTIVE,
        mode=objective.directions() if objective.multi else config.MODE,
        study_name=run_dir.name,
        sampler=build_sampler(sampler_settings(sampler, spec.budget)),
    )


def _journal_searcher_class():
    """Ray's `OptunaSearch` with its study in a journal file, told what ASHA did.

    Ray's own class reports every result to Optuna at step `training_iteration` and completes a
    stopped trial with its last (low-epoch) score as if it were final, so TPE would learn from
    epoch-1 scores as if they were full trainings. This subclass reports each whole epoch's
    score at step = epoch, records a trial that ended without error before `max_epochs` as
    PRUNED (Optuna keeps its last intermediate value), an errored one as FAIL, a finished one as
    COMPLETE with its best epoch's score (as the leaderboard scores it), and names the Ray trial
    in the user attribute `runs.RAY_TRIAL_ID_ATTR`.

    With a latency-aware objective (`config.Objective`) each trial's inference metrics become
    user attributes, each bound of the objective becomes an Optuna constraint
    (`Trial.set_constraint(metric, value - bound)`, which constraint-aware TPE reads; Optuna 5
    deprecates `TPESampler(constraints_func=...)` for it) before the trial is told, and a
    multi-objective study is told the trial's best macro-F1 with its inference metrics (Optuna
    has no intermediate values in multi-objective studies, so only `COMPLETE` trials carry
    values; ASHA still stops trials on macro-F1).

    Relies on the internals of Ray 2.60's `ray.tune.search.optuna.OptunaSearch`: `_ot_trials`
    (Ray trial id -> `optuna.Trial`), `_ot_study` and `_completed_trials`. Its `save`/`restore`
    pickle `__dict__`, so the journal storage and the per-trial scores below travel with the
    searcher's state and `Tuner.restore` (`search.resume`) writes to the same journal. Defined
    on first use so that importing this module does not import Ray Tune.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class JournalOptunaSearch(OptunaSearch):
        def __init__(
            self,
            *,
            journal: Path,
            max_epochs: float,
            trials: int | None = None,
            objective: config.Objective | None = None,
            **kwargs,
        ):
            storage = JournalStorage(JournalFileBackend(str(journal)))
            super().__init__(storage=storage, **kwargs)
            self._max_epochs = float(max_epochs)
            self._trials = trials
            self._objective = objective or config.Objective()
            #: Ray trial id -> {epoch: score} as reported to Optuna.
            self._epoch_scores: dict[str, dict[int, float]] = {}
            #: Ray trial id -> its inference metrics (the same at every report).
            self._inference: dict[str, dict[str, float]] = {}

        def suggest(self, trial_id: str):
            if trial_id not in self._ot_trials and self._budget_spent():
                return Searcher.FINISHED
            suggested = super().suggest(trial_id)
            if not self._epoch_scores:
                # The study's one objective by its name, for optuna-dashboard and load_study
                # (experimental in Optuna since 3.2; its warning says nothing to a user).
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._ot_study.set_metric_names(list(self._objective.metrics))
            if trial_id not in self._epoch_scores:
                self._ot_trials[trial_id].set_user_attr(runs.RAY_TRIAL_ID_ATTR, trial_id)
                self._epoch_scores[trial_id] = {}
            return suggested

        def _budget_spent(self) -> bool:
            """Whether `trials` Ray trials have already run: reported an epoch or finished,
            by the journal (written at once). Tune counts suggestions in its pickled state,
            which after a SIGKILL may predate the last trial it restores (seen once in a
            resumed S3 test run): it would then ask for one trial past the budget. A trial
            suggested but never reported does not count: after a SIGKILL Tune may have lost
            it, and then the budget needs its replacement."""
            budget = getattr(self, "_trials", None)  # state pickled before it existed: None
            if budget is None:
                return False
            ran = {
                frozen.user_attrs.get(runs.RAY_TRIAL_ID_ATTR)
                for frozen in self._ot_study.get_trials(deepcopy=False)
                if frozen.state.is_finished() or frozen.intermediate_values
            }
            return len(ran - {None}) >= budget

        def on_trial_result(self, trial_id: str, result: dict):
            self._report_epoch(trial_id, result)

        def _known(self, trial_id: str) -> bool:
            """Whether the study has this Ray trial. The pickled state may predate a trial
            that the journal (written at once) has: a resumed search finds it there."""
            if trial_id in self._ot_trials:
                return True
            for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.user_attrs.get(runs.RAY_TRIAL_ID_ATTR) == trial_id:
                    self._ot_trials[trial_id] = optuna.Trial(self._ot_study, frozen._trial_id)
                    self._epoch_scores[trial_id] = dict(frozen.intermediate_values)
                    return True
            return False

        def _report_epoch(self, trial_id: str, result: dict) -> None:
            if not self._known(trial_id):
                return
            scores = self._epoch_scores.get(trial_id)
            epoch = result.get(config.EPOCH)
            if scores is None or trial_id in self._completed_trials or epoch is None:
                return
            measured = {k: float(result[k]) for k in config.INFERENCE_METRICS if k in result}
            if measured:
                self._inference[trial_id] = measured
            # Evaluations between epochs (eval_every_steps) have no integer step of their own;
            # a trial retried from a checkpoint reports some epochs again (Optuna keeps the first).
            if float(epoch) != int(epoch) or int(epoch) in scores:
                return
            value = float(result[config.OBJECTIVE])
            scores[int(epoch)] = value
            if not self._objective.multi:
                try:
                    self._ot_trials[trial_id].report(value, int(epoch))
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # finished in the journal already (see `on_trial_complete`)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error=False):
            if trial_id in self._completed_trials or not self._known(trial_id):
                return
            # Ray hands the result that ends a trial (ASHA's stop, or max_t) to this call only.
            if result and not error:
                self._report_epoch(trial_id, result)
            scores = self._epoch_scores.get(trial_id, {})
            reached = float((result or {}).get(config.EPOCH) or max(scores, default=0))
            inference = self._inference.get(trial_id, {})
            if error:
                state, value = TrialState.FAIL, None
            else:
                value, state = _journal_outcome(scores, reached, self._max_epochs)
            if state == TrialState.COMPLETE and self._objective.multi:
                missing = [m for m in self._objective.metrics[1:] if m not in inference]
                if missing:
                    log.warning("trial %s reported no %s; told FAIL", trial_id, missing[0])
                    state, value = TrialState.FAIL, None
                else:
                    value = [value, *(inference[m] for m in self._objective.metrics[1:])]
            # A resumed search may restore a trial as running that the journal (written at
            # once, Tune's state every few seconds) already finished: the journal's word stays.
            trial = self._ot_trials[trial_id]
            if state != TrialState.FAIL:
                try:
                    self._tell_inference(trial, inference)
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass
            self._ot_study.tell(trial, value, state=state, skip_if_finished=True)
            self._completed_trials.add(trial_id)

        def _tell_inference(self, ot_trial, inference: dict[str, float]) -> None:
            """The inference metrics as user attributes, and the objective's bounds as
            constraints (feasible at 0 or below), before the trial is told."""
            for metric, measured in inference.items():
                ot_trial.set_user_attr(metric, measured)
            for metric, bound in self._objective.constraints.items():
                if metric in inference:
                    ot_trial.set_constraint(metric, inference[metric] - bound)

    return JournalOptunaSearch


def build_scheduler(name: str, spec: SearchSpec):
    """ASHA on epochs (fractional when evaluating every N steps), or FIFO (no early stopping)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr=config.EPOCH,
        max_t=spec.budget.max_epochs,
        grace_period=spec.budget.grace_period,
        reduction_factor=spec.budget.reduction_factor,
    )


# --- one record of a trial's end, across a kill -------------------------------------------------


def finished_trials(
    folder: Path, run_dir: Path, store: storage.Storage, *, study=None, max_epochs: float = 0
) -> frozenset[str]:
    """Before Tune restores an experiment (a search, or its confirmation, whose trial folders
    are in `folder`): the trials that ended, by the run's own records, made to agree.

    When a trial ends (ASHA stops it, or it trained its budget), in one step of Tune's loop:
    the searcher tells the Optuna journal (written at once), the ledger writes and stores the
    trial's status (`trial_ledger`), and Tune marks the trial TERMINATED in memory, to save its
    state at the end of a step, every few seconds. A kill in between leaves the journal ahead
    of the status and both ahead of Tune's saved state, which still holds the trial as running:
    Tune restores it, and would train a finished trial further and change its history and
    score. A trial that the journal or its status holds as ended did end: its status is written
    where missing and the journal told where it is not, and the trainable ends such a trial at
    once when Tune restarts it (`_trainable`'s `finished`), so that Tune's searcher, scheduler
    and callbacks see it end as they would have.

    Args:
        folder: The experiment's trial folders (the run's or its confirmation's; for a run in
            object storage, the mirror, pulled).
        run_dir: The run folder (its mirror for object storage).
        store: Where the run is kept: what changes in the mirror is uploaded.
        study: The run's Optuna study (None for the confirmation, which has none).
        max_epochs: The budget: a trial that reached fewer epochs was stopped early (PRUNED).

    Returns:
        The names of the trial folders that ended.
    """
    statuses = {d.name: runs.read_trial_status(d).get("status") for d in runs.trial_dirs(folder)}
    journal = _journal_trials(study)
    finished = {
        name
        for name, status in statuses.items()
        if status == runs.COMPLETED
        or (name in journal and journal[name].state.name in ("COMPLETE", "PRUNED"))
    }
    settled, told = [], []
    for name in sorted(finished):
        if statuses[name] != runs.COMPLETED:
            runs.write_trial_status(folder / name, runs.COMPLETED, failures=0)
            settled.append(folder / name / runs.TRIAL_STATUS)
        if name in journal and not journal[name].state.is_finished():
            scores = journal[name].intermediate_values
            value, outcome = _journal_outcome(scores, max(scores, default=0), max_epochs)
            study.tell(journal[name].number, value, state=outcome)
            told = [runs.optuna_journal(run_dir)]
    storage.push(store, run_dir.name, [*settled, *told])
    return frozenset(finished)


def _journal_trials(study) -> dict[str, Any]:
    """The study's trials by the Ray trial each one is ({} without a study)."""
    if study is None:
        return {}
    return {
        t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t
        for t in study.get_trials(deepcopy=False)
        if runs.RAY_TRIAL_ID_ATTR in t.user_attrs
    }


def _journal_outcome(scores: dict[int, float], reached: float, max_epochs: float):
    """How the journal records a trial that ended without error, by its score at each epoch
    and the epoch it reached: COMPLETE with its best epoch's score when it trained the budget,
    else PRUNED (ASHA stopped it). Returns `(value, state)`, as `Study.tell` takes them."""
    from optuna.trial import TrialState

    if not scores or reached < float(max_epochs):
        return None, TrialState.PRUNED
    return max(scores.values()), TrialState.COMPLETE


def _study_of(run_dir: Path, manifest: runs.Manifest):
    """The run's Optuna study, from its journal (None when the run searched nothing)."""
    journal = runs.optuna_journal(run_dir)
    if not manifest.optuna_study or not journal.is_file():
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage_ = JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=manifest.optuna_study, storage=storage_)


# --- the Tune callbacks: terminal lines and the trial ledger -------------------------------------


def progress_callback(
    *,
    total: int,
    max_epochs: int,
    rungs: list[float],
    shown: set[str],
    run_dir: Path,
    first_step: bool = True,
    time_budget_s: float | None = None,
):
    """The Tune callback that prints the terminal lines (`progress.SearchProgress`): `total`
    trials (or `time_budget_s`), the config keys in `shown` printed when a trial starts,
    (`first_step`) when training first began, and where long epochs stand (the trials' files
    in `runs.progress_dir(run_dir)`)."""
    from ray.tune import Callback

    from sentune.progress import SearchProgress, read_progress

    progress = SearchProgress(
        total=total, max_epochs=max_epochs, rungs=rungs, time_budget_s=time_budget_s
    )
    say_first_step = first_step
    folder = runs.progress_dir(run_dir).resolve()
    read_at = [0.0]

    class ProgressReporter(Callback):
        def __init__(self):
            self.progress = progress

        def on_step_begin(self, iteration, trials, **info):
            # Tune calls this many times a second; the trials write every few seconds.
            now = time.monotonic()
            if now - read_at[0] < config.PROGRESS_WRITE_EVERY_S:
                return
            read_at[0] = now
            running = {t.trial_id for t in trials if t.status == "RUNNING"}
            for trial_id, record in read_progress(folder).items():
                if trial_id in running:
                    if say_first_step and record.first_step_s is not None:
                        progress.on_first_step(record.first_step_s)
                    progress.on_progress(trial_id, record)

        def on_trial_start(self, iteration, trials, trial, **info):
            params = {k: v for k, v in trial.config.items() if k in shown}
            progress.on_start(trial.trial_id, params)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if config.OBJECTIVE in result and config.EPOCH in result:
                p95 = result.get(config.LATENCY_P95_MS)
                first_step = result.get(config.FIRST_STEP_S) if say_first_step else None
                progress.on_result(
                    trial.trial_id,
                    float(result[config.EPOCH]),
                    float(result[config.OBJECTIVE]),
                    p95_ms=float(p95) if p95 is not None else None,
                    first_step_s=float(first_step) if first_step is not None else None,
                )

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.on_complete(trial.trial_id)

        def on_trial_recover(self, iteration, trials, trial, **info):
            progress.on_retry(trial.trial_id, runs.last_error_line(trial.error_file))

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.on_error(trial.trial_id, runs.last_error_line(trial.error_file))

    return ProgressReporter()


def trial_ledger(folder: Path, run_dir: Path, store: storage.Storage, *, hook=None):
    """A Tune callback that keeps the run's own record of each trial in its folder in `folder`
    (the experiment's: the run's, or its confirmation's): its results as soon as Tune logs them,
    and its outcome (`TRIAL_STATUS`) when it ends.

    Ray Tune writes a trial's results into its local staging and copies them into the run every
    few seconds, with its own state; a killed search loses what came in between. The ledger
    stores each result at once (Ray's JSON logger must come before it in the callbacks), so
    that when the searcher tells the journal that a trial ended, the trial's history is already
    in the run; then the ledger writes the status. Ray leaves `error.txt` behind for a failure
    even when the retry succeeds; the status says whether the trial completed, is being
    retried, or errored for good (with the reason). Before a resume, `finished_trials` reads
    these records, and the first step of a resumed experiment writes the status of a trial
    that Tune saved as finished when a kill lost it.

    `hook` (tests: kill the driver at a chosen point) is called with `("before-status", trial)`
    when the journal holds the trial's end and its status is not yet written, and with
    `("after-status", trial)` once the status is stored. The class is defined on first use so
    that importing this module (as `analysis` and the CLI do) does not import Ray Tune.
    """
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    journal = runs.optuna_journal(run_dir)

    def store_files(trial, names: tuple[str, ...]) -> None:
        """Copy files of the trial's staging into its folder in the run (uploaded for a run
        in object storage, where `folder` is the mirror)."""
        staging, stored = Path(trial.local_path), folder / Path(trial.path).name
        if staging == stored:
            return
        stored.mkdir(parents=True, exist_ok=True)
        copied = [
            runs.write_bytes(stored / name, (staging / name).read_bytes())
            for name in names
            if (staging / name).is_file()
        ]
        storage.push(store, run_dir.name, copied)

    def record(trial, status: str) -> None:
        if not Path(trial.local_path).is_dir():
            return  # the trial never wrote its folder
        if store.remote and journal.is_file():
            storage.push(store, run_dir.name, [journal])
        if hook is not None:
            hook("before-status", trial)
        error = "" if status == runs.COMPLETED else runs.last_error_line(trial.error_file)
        failures = trial.run_metadata.num_failures
        # In Tune's staging too: Tune copies it into the run with the trial's other files.
        runs.write_trial_status(trial.local_path, status, failures=failures, error=error)
        store_files(trial, (runs.TRIAL_STATUS,))
        if hook is not None:
            hook("after-status", trial)

    class TrialLedger(Callback):
        def setup(self, **info):
            self.restored_unchecked = True  # each `fit`, a resumed one too

        def on_step_begin(self, iteration, trials, **info):
            # Once per `fit`, at its first step: a trial that Tune restored as finished whose
            # status a kill lost gets it, or it would read as unfinished on every resume.
            if not getattr(self, "restored_unchecked", False):
                return
            self.restored_unchecked = False
            for trial in trials:
                stored = folder / Path(trial.path).name
                if trial.status == Trial.TERMINATED and not runs.read_trial_status(stored):
                    failures = trial.run_metadata.num_failures
                    if stored.is_dir():
                        runs.write_trial_status(stored, runs.COMPLETED, failures=failures)
                        storage.push(store, run_dir.name, [stored / runs.TRIAL_STATUS])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            store_files(trial, (runs.PARAMS_FILE, runs.RESULTS_FILE))
            if store.remote and journal.is_file():
                storage.push(store, run_dir.name, [journal])

        def on_trial_recover(self, iteration, trials, trial, **info):
            record(trial, runs.RETRYING)

        def on_trial_complete(self, iteration, trials, trial, **info):
            record(trial, runs.COMPLETED)

        def on_trial_error(self, iteration, trials, trial, **info):
            record(trial, runs.ERROR)

    return TrialLedger()
