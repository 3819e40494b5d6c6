"""Run a search: Ray Tune's `Tuner` with Optuna's TPE (via `OptunaSearch`) and ASHA.

The only module that knows Ray. It checks resources, prepares the data once (before any run
folder exists, so bad input leaves nothing behind), puts it in Ray's object store, writes the run
manifest and lets Tune drive `trial.run_trial` in each trial.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from sentune import config
from sentune.config import TrialSettings
from sentune.data import PreparedData, prepare
from sentune.errors import ResourceError, SpaceError
from sentune.space import SearchSpec

log = logging.getLogger(__name__)

MANIFEST = "sentune.json"
_VERSIONED = (
    "sentune",
    "torch",
    "transformers",
    "accelerate",
    "ray",
    "optuna",
    "datasets",
    "scikit-learn",
    "numpy",
    "pandas",
)


@dataclass(frozen=True)
class Strategy:
    """A search strategy: which Optuna sampler proposes trials, which scheduler stops them."""

    sampler: str
    scheduler: str


#: Search strategies by name; adding one is one entry (samplers and schedulers below).
STRATEGIES: dict[str, Strategy] = {
    "tpe-asha": Strategy("tpe", "asha"),
    "random-asha": Strategy("random", "asha"),
    "tpe-fifo": Strategy("tpe", "fifo"),
    "random-fifo": Strategy("random", "fifo"),
}
DEFAULT_STRATEGY = "tpe-asha"


@dataclass(frozen=True)
class SearchOptions:
    """Runtime options of a search: where it runs and writes, not what it searches.

    Attributes:
        address: A Ray cluster to join (`auto`, `ray://…`, `host:port`); None starts local Ray.
        storage: The folder that holds one subfolder per run.
        precision: `auto`, `fp32`, `bf16` or `fp16` for every trial.
        device: `auto`, `cpu` or `cuda`.
        dashboard: Start the Ray dashboard (local runs; it listens on 127.0.0.1).
        dashboard_port: Its port (None: Ray's default, 8265).
        num_cpus: CPUs local Ray may use (None: all of this machine's).
        cache_dir: Where tokenized data is cached between searches.
        strategy: A name of `STRATEGIES` (sampler + scheduler).
    """

    address: str | None = None
    storage: Path = Path("trials")
    precision: str = "auto"
    device: str = "auto"
    dashboard: bool = True
    dashboard_port: int | None = None
    num_cpus: int | None = None
    cache_dir: Path = Path(".cache/sentune")
    strategy: str = DEFAULT_STRATEGY


def run(spec: SearchSpec, *, options: SearchOptions = SearchOptions()) -> Path:
    """Run the search of `spec` and return its run folder (`<storage>/<space>-<timestamp>`).

    Args:
        spec: A validated search space.
        options: Where the search runs and writes.

    Returns:
        The run folder, holding Tune's results and the run manifest.
    """
    if options.strategy not in STRATEGIES:
        raise SpaceError(
            f"unknown strategy {options.strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    _check_resources(spec, options)
    from sentune.model import resolve_model

    model_path = resolve_model(spec.model)
    _check_max_length(spec, model_path)
    data = prepare(spec.data, model_path, cache_dir=options.cache_dir)
    run_name = f"{spec.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = (options.storage / run_name).resolve()
    settings = TrialSettings(
        model=model_path,
        max_epochs=spec.budget.max_epochs,
        precision=options.precision,
        device=options.device,
        num_threads=max(1, int(spec.budget.cpus_per_trial)),
    )
    context = start_ray(options)
    try:
        run_dir.mkdir(parents=True)
        write_manifest(run_dir, spec=spec, data=data, settings=settings, options=options)
        tuner = _build_tuner(spec, data, settings, run_dir, STRATEGIES[options.strategy])
        log.info("search %s: %d trials, results in %s", run_name, spec.budget.trials, run_dir)
        tuner.fit()
    finally:
        if context is not None:
            import ray

            ray.shutdown()
    return run_dir


def _check_resources(spec: SearchSpec, options: SearchOptions) -> None:
    if spec.budget.gpus_per_trial > 0 and options.address is None:
        import torch

        if not torch.cuda.is_available():
            raise ResourceError(
                f"budget.gpus_per_trial is {spec.budget.gpus_per_trial:g} but this host has no "
                "CUDA GPU; use --gpus-per-trial 0, or --address to run on a cluster with GPUs"
            )
    cpus = options.num_cpus or os.cpu_count() or 1
    if options.address is None and spec.budget.cpus_per_trial > cpus:
        raise ResourceError(
            f"budget.cpus_per_trial is {spec.budget.cpus_per_trial:g} but this host has {cpus} "
            f"CPUs; use --cpus-per-trial {cpus} or less"
        )


def _check_max_length(spec: SearchSpec, model_path: str) -> None:
    from sentune.model import encoder_max_length

    limit = encoder_max_length(model_path)
    longest = max(spec.values("train.max_length"))
    if longest > limit:
        raise SpaceError(
            f"{spec.path}: train.max_length {longest} exceeds the model's limit of {limit} "
            f"tokens; use at most {limit}"
        )


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
        context = ray.init(
            num_cpus=options.num_cpus,
            include_dashboard=options.dashboard,
            dashboard_host="127.0.0.1",
            dashboard_port=options.dashboard_port,
            configure_logging=False,
            log_to_driver=True,
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


def _build_tuner(
    spec: SearchSpec,
    data: PreparedData,
    settings: TrialSettings,
    run_dir: Path,
    strategy: Strategy,
):
    from ray import tune

    budget = spec.budget
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, settings=settings),
        {"cpu": budget.cpus_per_trial, "gpu": budget.gpus_per_trial},
    )
    return tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=config.OBJECTIVE,
            mode=config.MODE,
            search_alg=_searcher(strategy.sampler, spec),
            scheduler=_scheduler(strategy.scheduler, spec),
            num_samples=budget.trials,
            max_concurrent_trials=budget.concurrency,
            time_budget_s=budget.time_budget_s,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=config.OBJECTIVE,
                checkpoint_score_order=config.MODE,
            ),
            verbose=1,
        ),
    )


def _searcher(sampler: str, spec: SearchSpec):
    """Optuna's sampler, seeded, behind Ray's `OptunaSearch` (None when nothing is searched)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if not spec.params:
        return None
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    return OptunaSearch(sampler=samplers[sampler](seed=spec.budget.seed))


def _scheduler(name: str, spec: SearchSpec):
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


def _trial_name(trial) -> str:
    return trial.trial_id


def _trainable(trial_config: dict[str, Any], *, data: PreparedData, settings: TrialSettings):
    """The Tune function trainable: `run_trial` with a callback that reports to Tune."""
    from ray import tune
    from transformers.utils import logging as hf_logging

    from sentune.trial import run_trial

    # One progress bar per weight load and save would flood the driver's log.
    hf_logging.disable_progress_bar()
    workdir = Path(tempfile.mkdtemp(prefix="sentune-trial-"))

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    try:
        run_trial(
            trial_config, data, report, settings=replace(settings, checkpoint_dir=str(workdir))
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_manifest(
    run_dir: Path,
    *,
    spec: SearchSpec,
    data: PreparedData,
    settings: TrialSettings,
    options: SearchOptions,
) -> dict[str, Any]:
    """Record what this run is: space, budget, seed, commit, versions, data, host and device."""
    manifest = {
        "run": run_dir.name,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "space": {
            "name": spec.name,
            "path": str(spec.path),
            "text": Path(spec.path).read_text(),
            "description": spec.description,
            "searched": sorted(spec.params),
            "fixed": spec.fixed,
        },
        "model": spec.model,
        "model_path": settings.model,
        "data": {
            "config": asdict(spec.data),
            "fingerprint": data.fingerprint,
            "label_names": list(data.label_names),
            "stats": data.stats,
        },
        "budget": asdict(spec.budget),
        "seed": spec.budget.seed,
        "settings": asdict(settings),
        "strategy": options.strategy,
        "address": options.address,
        "git_commit": _git_commit(),
        "versions": _versions(),
        "host": {
            "name": socket.gethostname(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "device": _device_description(),
    }
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    tmp.replace(run_dir / MANIFEST)
    return manifest


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _device_description() -> dict[str, Any]:
    import torch

    from sentune.trial import cpu_has_bf16

    device: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_has_bf16(),
    }
    if torch.cuda.is_available():
        device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return device
