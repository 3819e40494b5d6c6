"""Benchmark search strategies against each other and against the usual peer, on one budget.

Every method searches the same space on the same data and model for the same wall-clock budget,
once per seed:

- the Ray Tune strategies of `search.STRATEGIES` (Optuna TPE or random sampling, ASHA or FIFO);
- the peer: Hugging Face `Trainer.hyperparameter_search(backend="optuna")` with its standard recipe
  (`model_init`, truncation to max_length, `DataCollatorWithPadding`, evaluation each epoch,
  Optuna's defaults: TPE sampler, median pruner), stopped by the same wall-clock budget.

From each method's evaluations it computes the anytime curve (best validation macro-F1 so far
against cumulative trial-seconds, and against wall-clock seconds), the time to reach a target
macro-F1 and the final best; and, on one fixed configuration, the trial loop's throughput against
the plain `Trainer`, the evaluation time, Ray's overhead per trial and peak memory. Results go to
`analysis/bench/<timestamp>/`: `results.csv`, `curves.csv`, `bands.csv`, `throughput.csv`,
`summary.md`, `bench.html` and `bench.json` (machine, versions, seeds, settings).

Definitions (also written into `summary.md`):

- **Cumulative trial-seconds** at an evaluation: the evaluations of all trials of a search are put
  in the order they were reported (`timestamp`, Tune's whole-second report time, ties broken by
  `time_total_s`); at evaluation *k* it is the sum over trials of `time_total_s` of each trial's
  latest evaluation at or before *k* (`time_total_s`: seconds since the trial started, model
  loading included). Running trials count up to their latest report; a trial contributes nothing
  after its last report. For the peer, a trial starts when `model_init` is called.
- **Wall-clock seconds**: time of the evaluation minus the time the method's search was started
  (data already prepared; Ray already running).
- **Best so far**: the running maximum of `val_macro_f1` over those evaluations.
- **Time to target**: the first cumulative trial-second (or wall second) at which the best so far
  reaches the target; missing when it never does.
- **Overhead per trial** (Ray trials): `time_total_s - train_s - evaluations * eval_s`, where
  `train_s` is the trial's own training time (optimizer steps only) and `eval_s` is one
  validation pass timed outside Ray with the same threads. It holds model loading, checkpoint
  saves, batching outside the timed steps and Ray's actor start, reporting and persistence; the
  same quantity of a direct `run_trial` call (no Ray) is reported beside it, so the difference is
  Ray's share.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import resource
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentune import config, runs, search, space
from sentune.config import HeadConfig, TrainConfig, TrialSettings
from sentune.data import PreparedData
from sentune.errors import SentuneError, SpaceError
from sentune.space import SearchSpec

log = logging.getLogger(__name__)

PEER = "peer"


@dataclass(frozen=True)
class Method:
    """A way to search: a Ray Tune strategy of `search.STRATEGIES`, or the peer (strategy None)."""

    name: str
    description: str
    strategy: str | None = None


#: Methods by name: every Ray Tune strategy, plus the Hugging Face Trainer's own search.
METHODS: dict[str, Method] = {
    **{
        name: Method(name, f"Ray Tune: Optuna {s.sampler} sampler, {s.scheduler} scheduler", name)
        for name, s in search.STRATEGIES.items()
    },
    PEER: Method(PEER, "Trainer.hyperparameter_search (Optuna TPE sampler, median pruner)"),
}
DEFAULT_METHODS = ("tpe-asha", "random-asha", "tpe-fifo", PEER)

#: CPU-sized data and input length (used unless the bench runs on GPUs or sizes are given).
CPU_SIZES: dict[str, Any] = {"data.train_size": 1000, "data.val_size": 600, "train.max_length": 48}
#: A search stops on its time budget, never on its trial count.
_UNLIMITED_TRIALS = 100_000
_BAND_POINTS = 200
#: Optuna's TPESampler proposes at random until this many trials have finished.
_TPE_STARTUP_TRIALS = 10
#: TrainingArguments fields set from the resolved `train.*` values of a peer trial.
_PEER_TRAINING_KEYS = (
    "train.learning_rate",
    "train.weight_decay",
    "train.warmup_ratio",
    "train.batch_size",
    "train.effective_batch_size",
    "train.max_grad_norm",
)
#: Keys the peer sets through `model_init` (the head and the class weights of the loss).
_PEER_MODEL_KEYS = (*config.dotted_keys("head"), "train.imbalance")


@dataclass(frozen=True)
class BenchOptions:
    """How a benchmark runs.

    Attributes:
        methods: Names of `METHODS` to compare.
        seeds: One search per method and seed (the sampler's seed).
        budget_s: Wall-clock seconds each search may run.
        target: Validation macro-F1 to reach (None: the peer's median final best, or without the
            peer the lowest median final best of the methods).
        out_root: Results go to `<out_root>/<timestamp>/`.
        storage: Ray Tune runs go to `<storage>/bench-<timestamp>/`.
        precision: `auto`, `fp32`, `bf16` or `fp16` for every method.
        device: `auto`, `cpu` or `cuda`.
        cache_dir: Tokenized data cache.
        num_cpus: CPUs local Ray may use (None: all).
        peer_threads: torch threads of the peer's (sequential) trials (None: all CPUs).
        throughput: Also measure throughput, evaluation time and memory on one configuration.
        isolate: Run the peer and the throughput measurements in fresh processes (clean peak
            memory readings); False runs them in this process (tests).
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1)
    budget_s: float = 240.0
    target: float | None = None
    out_root: Path = Path("analysis/bench")
    storage: Path = Path(config.STORAGE_DIR)
    precision: str = "auto"
    device: str = "auto"
    cache_dir: Path = Path(config.CACHE_DIR)
    num_cpus: int | None = None
    peer_threads: int | None = None
    throughput: bool = True
    isolate: bool = True


@dataclass
class MethodRun:
    """One search of one method and seed, as the evaluations it reported.

    Attributes:
        reports: One row per evaluation: `trial_id`, `timestamp` (unix seconds), `time_total_s`
            (seconds since the trial started), `val_macro_f1`, and `train_s` where known.
        started: Unix time the search was started.
        run_dir: The Ray Tune run folder (None for the peer).
        trials: Trials started.
        peak_rss_mb: Peak resident memory of the searching process (peer), when measured.
        errors: Trials that failed, by id.
    """

    method: str
    seed: int
    reports: pd.DataFrame
    started: float
    run_dir: str | None = None
    trials: int = 0
    peak_rss_mb: float | None = None
    errors: dict[str, str] = field(default_factory=dict)


# --- the whole benchmark ---------------------------------------------------------------------


def run_benchmark(
    space_name: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    options: BenchOptions = BenchOptions(),
) -> Path:
    """Run every method on every seed with the same budget; write and print the results.

    Args:
        space_name: A space in `search_spaces/` or a YAML path.
        overrides: Dotted-key overrides of the space (sizes, model, dataset, …).
        options: Methods, seeds, budget and where results go.

    Returns:
        The results folder `<out_root>/<timestamp>/`.
    """
    _check_methods(options.methods)
    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    specs = {
        seed: load_spec(space_name, overrides, seed=seed, options=options) for seed in options.seeds
    }
    data, model_path = _prepare(specs[options.seeds[0]], options)
    # max_length auto/quantiles resolve against the data once, so the peer sees the same values.
    specs = {s: search.max_length_for_data(spec, data, model_path)[0] for s, spec in specs.items()}
    base = specs[options.seeds[0]]
    storage = options.storage / f"bench-{stamp}"
    context = (
        search.start_ray(search.SearchOptions(dashboard=False, num_cpus=options.num_cpus))
        if any(METHODS[m].strategy for m in options.methods)
        else None
    )
    runs: list[MethodRun] = []
    throughput = pd.DataFrame()
    try:
        # Seeds outermost: a drift in machine load then touches every method alike.
        for seed in options.seeds:
            for name in options.methods:
                log.info("bench: %s, seed %d, %.0f s", name, seed, options.budget_s)
                runs.append(
                    run_method(
                        name,
                        specs[seed],
                        seed=seed,
                        data=data,
                        model_path=model_path,
                        storage=storage,
                        options=options,
                    )
                )
        if options.throughput:
            throughput = measure_throughput(base, data, model_path, options=options)
    finally:
        if context is not None:
            import ray

            ray.shutdown()
    out = options.out_root / stamp
    results = write_results(out, runs, throughput, spec=base, options=options)
    print_results(results, out)
    return out


def load_spec(
    space_name: str | Path,
    overrides: dict[str, Any] | None,
    *,
    seed: int,
    options: BenchOptions,
) -> SearchSpec:
    """The space with the bench's budget: `budget_s` seconds, unlimited trials, this seed."""
    values = {
        **(overrides or {}),
        "budget.time_budget_s": options.budget_s,
        "budget.trials": _UNLIMITED_TRIALS,
        "budget.seed": seed,
    }
    return space.load(space_name, overrides=values)


def _check_methods(methods: tuple[str, ...]) -> None:
    if not methods:
        raise SpaceError(f"no methods to compare; give some of {', '.join(METHODS)}")
    for name in methods:
        if name not in METHODS:
            raise SpaceError(f"unknown bench method {name!r}; use some of {', '.join(METHODS)}")


def _prepare(spec: SearchSpec, options: BenchOptions) -> tuple[PreparedData, str]:
    from sentune.data import prepare
    from sentune.model import resolve_model

    model_path = resolve_model(spec.model)
    return prepare(spec.data, model_path, cache_dir=options.cache_dir), model_path


def run_method(
    name: str,
    spec: SearchSpec,
    *,
    seed: int,
    data: PreparedData,
    model_path: str,
    storage: Path,
    options: BenchOptions,
) -> MethodRun:
    """Run one method of `METHODS` for one seed (the one factory every method goes through)."""
    method = METHODS[name]
    if method.strategy is None:
        kwargs = {
            "seed": seed,
            "budget_s": options.budget_s,
            "precision": options.precision,
            "threads": options.peer_threads or os.cpu_count() or 1,
        }
        if options.isolate:
            return run_isolated(run_peer, spec, data, model_path, **kwargs)
        return run_peer(spec, data, model_path, **kwargs)
    return run_tune(spec, method.strategy, seed=seed, storage=storage, options=options)


def run_isolated(fn, *args, **kwargs):
    """Call `fn` in a fresh process, so that its peak memory is its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


# --- Ray Tune strategies ---------------------------------------------------------------------


def run_tune(
    spec: SearchSpec, strategy: str, *, seed: int, storage: Path, options: BenchOptions
) -> MethodRun:
    """One Ray Tune search with `strategy`, read back as its evaluations."""

    search_options = search.SearchOptions(
        storage=storage,
        precision=options.precision,
        device=options.device,
        dashboard=False,
        num_cpus=options.num_cpus,
        cache_dir=options.cache_dir,
        strategy=strategy,
    )
    started = time.time()
    run_dir = search.run(spec, options=search_options)
    run = runs.open_run(run_dir)
    return MethodRun(
        method=strategy,
        seed=seed,
        reports=tune_reports(run.histories),
        started=started,
        run_dir=str(run_dir),
        trials=len(run.params),
        errors=dict(run.errors),
    )


_REPORT_COLUMNS = ["trial_id", "timestamp", "time_total_s", config.OBJECTIVE, "train_s"]


def tune_reports(histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All trials' evaluations in one table (`_REPORT_COLUMNS`, plus `peak_rss_mb` if reported)."""
    frames = []
    for trial_id, history in histories.items():
        if config.OBJECTIVE not in history:
            continue
        keep = [c for c in (*_REPORT_COLUMNS, "peak_rss_mb") if c in history]
        frame = history[keep].copy()
        frame["trial_id"] = trial_id
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=_REPORT_COLUMNS)
    return pd.concat(frames, ignore_index=True)


# --- the peer: Trainer.hyperparameter_search -------------------------------------------------


def peer_unmapped(spec: SearchSpec) -> list[str]:
    """Searched keys the peer cannot vary per trial (it uses their fixed or default value)."""
    mapped = set(_PEER_TRAINING_KEYS) | set(_PEER_MODEL_KEYS)
    return sorted(key for key in spec.params if key not in mapped)


def peer_values(spec: SearchSpec, trial=None) -> dict[str, Any]:
    """A peer trial's tunable values by dotted key: defaults, the space's fixed values, and
    (with a trial) the searched values it can express. Optuna returns the same value when a
    parameter is suggested twice in one trial, so `model_init` and `hp_space` agree."""
    values = {**config.to_dotted(HeadConfig(), "head"), **config.to_dotted(TrainConfig(), "train")}
    values.update(spec.fixed)
    if trial is not None:
        for key, param in spec.params.items():
            if key not in peer_unmapped(spec):
                values[key] = param.suggest(trial, key)
    return values


def peer_training_args(values: dict[str, Any]) -> dict[str, Any]:
    """The TrainingArguments fields of one peer trial, from its dotted values."""
    train = config.build_section("train", values)
    return {
        "learning_rate": train.learning_rate,
        "weight_decay": train.weight_decay,
        # transformers 5: a float warmup_steps below 1 is a ratio of all steps.
        "warmup_steps": float(train.warmup_ratio),
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": max(
            1, math.ceil(train.effective_batch_size / train.batch_size)
        ),
        "max_grad_norm": train.max_grad_norm,
    }


def run_peer(
    spec: SearchSpec,
    data: PreparedData,
    model_path: str,
    *,
    seed: int,
    budget_s: float,
    precision: str = "auto",
    threads: int | None = None,
    n_trials: int = _UNLIMITED_TRIALS,
) -> MethodRun:
    """`Trainer.hyperparameter_search(backend="optuna")` on the space, for `budget_s` seconds.

    Trials run one after another (Optuna's default); a callback stops the running trial when
    the budget is spent and Optuna's `timeout` starts no new one. Evaluations after the budget
    are not recorded.

    Args:
        spec: The space (its searched keys are mapped where the Trainer can express them).
        data: Prepared data (the peer re-tokenizes its texts with truncation, as usual).
        model_path: The resolved encoder.
        seed: Seed of Optuna's TPE sampler.
        budget_s: Wall-clock seconds.
        precision: `auto`, `fp32`, `bf16` or `fp16`.
        threads: torch threads (None: torch's default).
        n_trials: Most trials (the budget normally ends the search first).

    Returns:
        The evaluations, with the peak resident memory of this process.
    """
    import optuna
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from sentune.evaluate import compute_metrics
    from sentune.model import build_model, class_weights, load_tokenizer
    from sentune.trial import resolve_precision

    if threads:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(precision, device)
    fixed = peer_values(spec)
    max_length = fixed["train.max_length"]
    tokenizer = load_tokenizer(model_path)
    label_names = list(data.label_names)
    counts = np.bincount(data.train.labels, minlength=len(label_names)).tolist()

    def dataset(split) -> Dataset:
        encoded = tokenizer(split.texts, truncation=True, max_length=max_length)
        return Dataset.from_dict({**encoded, "labels": split.labels.tolist()})

    clock = _PeerClock(budget_s)

    def model_init(trial=None):
        values = peer_values(spec, trial)
        clock.trial_started(trial)
        return build_model(
            model_path,
            config.build_section("head", values),
            label_names=label_names,
            class_weights=class_weights(counts, values["train.imbalance"]),
        )

    def metrics_fn(prediction) -> dict[str, float]:
        preds = np.asarray(prediction.predictions).argmax(-1)
        return compute_metrics(np.asarray(prediction.label_ids), preds, label_names)

    class BudgetCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if clock.spent():
                control.should_training_stop = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            clock.evaluated(metrics["eval_" + config.OBJECTIVE])

    train_set, val_set = dataset(data.train), dataset(data.validation)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=spec.budget.max_epochs,
            per_device_eval_batch_size=2 * config.build_section("train", fixed).batch_size,
            lr_scheduler_type="linear",
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=device == "cpu",
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=config.build_section("train", fixed).seed,
            dataloader_num_workers=0,
            **peer_training_args(fixed),
        )
        trainer = Trainer(
            model_init=model_init,
            args=args,
            train_dataset=train_set,
            eval_dataset=val_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=metrics_fn,
            callbacks=[BudgetCallback()],
        )
        # With tqdm off the Trainer prints every evaluation's metrics; the curves record them.
        trainer.remove_callback(PrinterCallback)
        clock.start()
        trainer.hyperparameter_search(
            hp_space=lambda trial: peer_training_args(peer_values(spec, trial)),
            compute_objective=lambda metrics: metrics["eval_" + config.OBJECTIVE],
            n_trials=n_trials,
            direction="maximize",
            backend="optuna",
            sampler=optuna.samplers.TPESampler(seed=seed),
            timeout=budget_s,
        )
    return MethodRun(
        method=PEER,
        seed=seed,
        reports=clock.reports(),
        started=clock.started,
        trials=clock.trials,
        peak_rss_mb=peak_rss_mb(),
    )


class _PeerClock:
    """The budget of a peer search and the times of its trials and evaluations."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.started = time.time()
        self.trials = 0
        self._trial_start = self.started
        self._trial_id = ""
        self._rows: list[dict[str, Any]] = []

    def start(self) -> None:
        self.started = time.time()

    def spent(self) -> bool:
        return time.time() - self.started >= self.budget_s

    def trial_started(self, trial) -> None:
        # The Trainer also calls model_init once without a trial, before the search.
        if trial is not None:
            self.trials += 1
            self._trial_id = f"peer_{trial.number:05d}"
            self._trial_start = time.time()

    def evaluated(self, value: float) -> None:
        now = time.time()
        if self._trial_id and now - self.started <= self.budget_s:
            self._rows.append(
                {
                    "trial_id": self._trial_id,
                    "timestamp": now,
                    "time_total_s": now - self._trial_start,
                    config.OBJECTIVE: float(value),
                }
            )

    def reports(self) -> pd.DataFrame:
        return pd.DataFrame(self._rows, columns=_REPORT_COLUMNS[:4])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- anytime curves and time to target -------------------------------------------------------


def anytime_curve(reports: pd.DataFrame, *, started: float = 0.0) -> pd.DataFrame:
    """Best validation macro-F1 so far against cumulative trial-seconds and wall seconds.

    See the module docstring for the definitions.

    Args:
        reports: One row per evaluation: `trial_id`, `timestamp`, `time_total_s`, the objective.
        started: Unix time the search started (`wall_s` is measured from it).

    Returns:
        One row per evaluation, in report order: `trial_id`, `timestamp`, `wall_s`, `trial_s`
        (cumulative trial-seconds), the objective and `best` (best so far).
    """
    columns = ["trial_id", "timestamp", "wall_s", "trial_s", config.OBJECTIVE, "best"]
    if reports.empty:
        return pd.DataFrame(columns=columns)
    ordered = reports.sort_values(["timestamp", "time_total_s"], kind="stable")
    latest: dict[str, float] = {}
    trial_s = []
    for trial_id, total in zip(ordered["trial_id"], ordered["time_total_s"], strict=True):
        latest[trial_id] = float(total)
        trial_s.append(sum(latest.values()))
    curve = pd.DataFrame(
        {
            "trial_id": ordered["trial_id"].to_numpy(),
            "timestamp": ordered["timestamp"].to_numpy(dtype=float),
            "wall_s": ordered["timestamp"].to_numpy(dtype=float) - started,
            "trial_s": trial_s,
            config.OBJECTIVE: ordered[config.OBJECTIVE].to_numpy(dtype=float),
        }
    )
    curve["best"] = curve[config.OBJECTIVE].cummax()
    return curve[columns]


def time_to_target(curve: pd.DataFrame, target: float, *, x: str = "trial_s") -> float:
    """The first `x` (trial-seconds or wall seconds) at which the best so far reaches `target`;
    NaN when it never does."""
    reached = curve.loc[curve["best"] >= target, x]
    return float(reached.iloc[0]) if len(reached) else math.nan


def step_values(curve: pd.DataFrame, grid: np.ndarray, *, x: str = "trial_s") -> np.ndarray:
    """The best so far at each grid point (a step function; NaN before the first evaluation)."""
    xs = curve[x].to_numpy(dtype=float)
    best = curve["best"].to_numpy(dtype=float)
    index = np.searchsorted(xs, grid, side="right") - 1
    return np.where(index >= 0, best[np.clip(index, 0, None)], np.nan)


def curve_bands(curves: pd.DataFrame, *, x: str = "trial_s", points: int = _BAND_POINTS):
    """Median, quartiles and min/max over seeds of each method's anytime curve, on one grid.

    Args:
        curves: Anytime curves of several runs, with `method` and `seed` columns.
        x: `trial_s` or `wall_s`.
        points: Grid points from 0 to the largest `x` of any run.

    Returns:
        One row per (method, grid point): `method`, `x` (the axis name), `value`, `median`,
        `q25`, `q75`, `min`, `max` and `n` (seeds with an evaluation by then).
    """
    if curves.empty:
        return pd.DataFrame(
            columns=["method", "x", "value", "median", "q25", "q75", "min", "max", "n"]
        )
    grid = np.linspace(0.0, float(curves[x].max()), points)
    rows = []
    for method, group in curves.groupby("method", sort=False):
        stacked = np.vstack(
            [step_values(run, grid, x=x) for _, run in group.groupby("seed", sort=True)]
        )
        n = np.sum(~np.isnan(stacked), axis=0)
        # All-NaN columns (before any seed's first evaluation) stay NaN without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = {
                "median": np.nanmedian(stacked, axis=0),
                "q25": np.nanpercentile(stacked, 25, axis=0),
                "q75": np.nanpercentile(stacked, 75, axis=0),
                "min": np.nanmin(stacked, axis=0),
                "max": np.nanmax(stacked, axis=0),
            }
        frame = pd.DataFrame({"method": method, "x": x, "value": grid, **stats, "n": n})
        rows.append(frame)
    return pd.concat(rows, ignore_index=True)


# --- overheads and throughput ----------------------------------------------------------------


def trial_overheads(reports: pd.DataFrame, *, eval_s: float | None) -> pd.DataFrame:
    """Per Ray trial: wall time, training time, evaluations and what is left (see the module
    docstring): `trial_id`, `wall_s`, `train_s`, `evaluations`, `nontrain_s`, `overhead_s`."""
    columns = ["trial_id", "wall_s", "train_s", "evaluations", "nontrain_s", "overhead_s"]
    if reports.empty or "train_s" not in reports:
        return pd.DataFrame(columns=columns)
    grouped = reports.groupby("trial_id", sort=True)
    table = pd.DataFrame(
        {
            "wall_s": grouped["time_total_s"].max(),
            "train_s": grouped["train_s"].max(),
            "evaluations": grouped.size(),
        }
    ).reset_index()
    table["nontrain_s"] = table["wall_s"] - table["train_s"]
    table["overhead_s"] = (
        table["nontrain_s"] - table["evaluations"] * eval_s if eval_s is not None else math.nan
    )
    return table[columns]


def measure_throughput(
    spec: SearchSpec, data: PreparedData, model_path: str, *, options: BenchOptions
) -> pd.DataFrame:
    """The trial loop (run directly, no Ray) and the plain Trainer on one configuration: the
    space's fixed values, defaults for the searched keys, one epoch, the threads of one trial.

    Returns:
        One row per loop: `loop`, `samples_per_s`, `train_s`, `wall_s`, `eval_s`,
        `overhead_s` (trial loop: wall - train - eval), `val_macro_f1`, `peak_rss_mb`, `threads`.
    """
    import torch

    values = peer_values(spec)
    train = config.build_section("train", values)
    head = config.build_section("head", values)
    device = "cuda" if torch.cuda.is_available() and options.device != "cpu" else "cpu"
    from sentune.trial import resolve_precision

    precision = resolve_precision(options.precision, device)
    threads = max(1, int(spec.budget.cpus_per_trial))
    call = run_isolated if options.isolate else (lambda fn, *a, **k: fn(*a, **k))
    kwargs = {"epochs": 1, "precision": precision, "threads": threads, "head": head}
    rows = [
        call(measure_trainer, data, model_path, train, **kwargs),
        call(measure_trial_loop, data, model_path, train, **kwargs),
    ]
    return pd.DataFrame(rows)


def measure_trial_loop(
    data: PreparedData,
    model_path: str,
    train: TrainConfig,
    *,
    epochs: int,
    precision: str,
    threads: int | None = None,
    head: HeadConfig | None = None,
) -> dict[str, Any]:
    """`trial.run_trial` called directly: throughput, one evaluation's time, memory.

    Returns:
        `loop`, `samples_per_s` (training only), `train_s`, `wall_s`, `eval_s` (one validation
        pass of the trained model), `evaluations`, `overhead_s` (wall - train - evaluations *
        eval_s), `val_macro_f1`, `peak_rss_mb`, `threads`.
    """
    import torch
    from transformers.utils import logging as hf_logging

    from sentune.model import load_model
    from sentune.trial import run_trial

    if threads:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    history: list[dict[str, Any]] = []
    head = head or HeadConfig()
    trial_config = {**config.to_dotted(train, "train"), **config.to_dotted(head, "head")}
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        result = run_trial(
            trial_config,
            data,
            lambda metrics, _checkpoint: history.append(metrics),
            settings=TrialSettings(
                model=model_path,
                max_epochs=epochs,
                precision=precision,
                num_threads=threads,
                checkpoint_dir=workdir,
            ),
        )
        wall = time.perf_counter() - started
        eval_s = measure_evaluation(load_model(result.checkpoint_dir), data, train, precision)
    return {
        "loop": "sentune trial",
        "samples_per_s": len(data.train) * epochs / result.train_s,
        "train_s": result.train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "evaluations": len(history),
        "overhead_s": wall - result.train_s - len(history) * eval_s,
        "val_macro_f1": history[-1][config.OBJECTIVE],
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads or torch.get_num_threads(),
    }


def measure_evaluation(model, data: PreparedData, train: TrainConfig, precision: str) -> float:
    """Seconds of one validation pass as the trial loop makes it (length-sorted batches of twice
    the training batch size, dynamic padding, autocast), on CPU or CUDA."""
    import torch

    from sentune.evaluate import predict_logits

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    split = data.validation
    ids = split.truncated(train.max_length)
    started = time.perf_counter()
    predict_logits(
        model,
        split,
        ids=ids,
        pad_id=data.pad_id,
        batch_size=train.batch_size * 2,
        device=device,
        autocast=lambda: torch.autocast(device, dtype=dtype, enabled=dtype is not None),
    )
    return time.perf_counter() - started


def measure_trainer(
    data: PreparedData,
    model_path: str,
    train: TrainConfig,
    *,
    epochs: int,
    precision: str,
    threads: int | None = None,
    head: HeadConfig | None = None,
) -> dict[str, Any]:
    """The plain Hugging Face `Trainer` on the same configuration (standard recipe: truncation,
    `DataCollatorWithPadding`, random batches). Same keys as `measure_trial_loop`."""
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    from sentune.evaluate import compute_metrics
    from sentune.model import build_model, class_weights, load_tokenizer

    if threads:
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    set_seed(train.seed)
    head = head or HeadConfig()
    tokenizer = load_tokenizer(model_path)
    counts = np.bincount(data.train.labels, minlength=len(data.label_names)).tolist()
    model = build_model(
        model_path,
        head,
        label_names=list(data.label_names),
        class_weights=class_weights(counts, train.imbalance),
    )

    def dataset(split) -> Dataset:
        encoded = tokenizer(split.texts, truncation=True, max_length=train.max_length)
        return Dataset.from_dict({**encoded, "labels": split.labels.tolist()})

    train_set, val_set = dataset(data.train), dataset(data.validation)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_eval_batch_size=train.batch_size * 2,
            lr_scheduler_type="linear",
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=not torch.cuda.is_available(),
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            seed=train.seed,
            dataloader_num_workers=0,
            **peer_training_args(config.to_dotted(train, "train")),
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_set,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        train_metrics = trainer.train().metrics
        train_s = time.perf_counter() - started
        eval_started = time.perf_counter()
        prediction = trainer.predict(val_set)
        eval_s = time.perf_counter() - eval_started
        wall = time.perf_counter() - started
    preds = np.asarray(prediction.predictions).argmax(-1)
    f1 = compute_metrics(data.validation.labels, preds, list(data.label_names))[config.OBJECTIVE]
    return {
        "loop": "HF Trainer",
        "samples_per_s": train_metrics["train_samples_per_second"],
        "train_s": train_s,
        "wall_s": wall,
        "eval_s": eval_s,
        "evaluations": 1,
        "overhead_s": math.nan,
        "val_macro_f1": f1,
        "peak_rss_mb": peak_rss_mb(),
        "threads": threads or torch.get_num_threads(),
    }


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchResults:
    """What `write_results` computed: per-run rows, curves, bands, summary and throughput."""

    results: pd.DataFrame
    curves: pd.DataFrame
    bands: pd.DataFrame
    summary: pd.DataFrame
    throughput: pd.DataFrame
    target: float
    target_source: str


def compute_results(
    runs: list[MethodRun],
    throughput: pd.DataFrame,
    *,
    target: float | None,
    budget_s: float,
) -> BenchResults:
    """Curves, time to target, final bests and overheads of every run; medians per method.

    Args:
        runs: The searches, any methods and seeds.
        throughput: `measure_throughput`'s table (may be empty).
        target: Macro-F1 to reach (None: the peer's median final best, else the lowest
            median final best of the methods).
        budget_s: The budget each search had.
    """
    curves = pd.concat(
        [
            anytime_curve(run.reports, started=run.started).assign(method=run.method, seed=run.seed)
            for run in runs
        ],
        ignore_index=True,
    )
    finals = {
        (run.method, run.seed): float(c["best"].iloc[-1]) if len(c) else math.nan
        for run in runs
        for c in [curves[(curves["method"] == run.method) & (curves["seed"] == run.seed)]]
    }
    target, source = _target(finals, target)
    eval_s = _trial_eval_s(throughput)
    rows = []
    for run in runs:
        curve = curves[(curves["method"] == run.method) & (curves["seed"] == run.seed)]
        overheads = trial_overheads(run.reports, eval_s=eval_s)
        rss = run.peak_rss_mb
        if rss is None and "peak_rss_mb" in run.reports:
            rss = float(run.reports["peak_rss_mb"].max())
        rows.append(
            {
                "method": run.method,
                "seed": run.seed,
                "final_best": finals[(run.method, run.seed)],
                "time_to_target_trial_s": time_to_target(curve, target, x="trial_s"),
                "time_to_target_wall_s": time_to_target(curve, target, x="wall_s"),
                "trials": run.trials,
                "evaluations": len(run.reports),
                "failed": len(run.errors),
                "trial_s_total": float(curve["trial_s"].iloc[-1]) if len(curve) else 0.0,
                "last_report_wall_s": float(curve["wall_s"].iloc[-1]) if len(curve) else 0.0,
                "budget_s": budget_s,
                "trial_wall_s_mean": _mean(overheads["wall_s"]),
                "nontrain_s_mean": _mean(overheads["nontrain_s"]),
                "overhead_s_mean": _mean(overheads["overhead_s"]),
                "overhead_s_per_eval": _mean(overheads["overhead_s"] / overheads["evaluations"]),
                "peak_rss_mb": rss if rss is not None else math.nan,
                "run_dir": run.run_dir or "",
            }
        )
    results = pd.DataFrame(rows)
    bands = pd.concat(
        [curve_bands(curves, x="trial_s"), curve_bands(curves, x="wall_s")], ignore_index=True
    )
    return BenchResults(
        results=results,
        curves=curves,
        bands=bands,
        summary=summarise(results),
        throughput=throughput,
        target=target,
        target_source=source,
    )


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def _target(finals: dict[tuple[str, int], float], target: float | None) -> tuple[float, str]:
    if target is not None:
        return float(target), "given"
    by_method: dict[str, list[float]] = {}
    for (method, _seed), value in finals.items():
        by_method.setdefault(method, []).append(value)
    medians = {m: float(np.nanmedian(v)) for m, v in by_method.items() if not np.all(np.isnan(v))}
    if PEER in medians:
        return medians[PEER], "the peer's median final best"
    if not medians:
        return math.nan, "no evaluations"
    return min(medians.values()), "the lowest median final best of the methods"


def _trial_eval_s(throughput: pd.DataFrame) -> float | None:
    if throughput.empty:
        return None
    rows = throughput[throughput["loop"] == "sentune trial"]
    return float(rows["eval_s"].iloc[0]) if len(rows) else None


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method: medians over seeds, spreads, and time to target against the peer's.

    A run that never reaches the target counts as infinitely slow in the median; `reached` says
    how many did. `speedup_vs_peer` is the peer's median time to target over the method's
    (above 1: the method gets there sooner), on cumulative trial-seconds and on wall seconds.
    """
    rows = []
    for method, group in results.groupby("method", sort=False):
        rows.append(
            {
                "method": method,
                "seeds": len(group),
                "final_best_median": float(group["final_best"].median()),
                "final_best_min": float(group["final_best"].min()),
                "final_best_max": float(group["final_best"].max()),
                "reached": int(group["time_to_target_trial_s"].notna().sum()),
                "ttt_trial_s_median": _median_time(group["time_to_target_trial_s"]),
                "ttt_wall_s_median": _median_time(group["time_to_target_wall_s"]),
                "trials_median": float(group["trials"].median()),
                "evaluations_median": float(group["evaluations"].median()),
                "overhead_s_per_trial": float(group["overhead_s_mean"].median()),
                "peak_rss_mb": float(group["peak_rss_mb"].max()),
            }
        )
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    peer = summary[summary["method"] == PEER]
    for x in ("trial_s", "wall_s"):
        column = f"ttt_{x}_median"
        peer_time = float(peer[column].iloc[0]) if len(peer) else math.nan
        summary[f"speedup_vs_peer_{x}"] = peer_time / summary[column]
    return summary


def _median_time(times: pd.Series) -> float:
    return float(times.fillna(math.inf).median())


def write_results(
    out: Path,
    runs: list[MethodRun],
    throughput: pd.DataFrame,
    *,
    spec: SearchSpec,
    options: BenchOptions,
) -> BenchResults:
    """Compute the results and write them to `out`: CSV tables, `summary.md`, `bench.html` (if
    plotly is installed) and `bench.json` (settings, seeds, machine and versions)."""
    results = compute_results(runs, throughput, target=options.target, budget_s=options.budget_s)
    out.mkdir(parents=True, exist_ok=True)
    results.results.to_csv(out / "results.csv", index=False)
    results.curves.to_csv(out / "curves.csv", index=False)
    results.bands.to_csv(out / "bands.csv", index=False)
    results.throughput.to_csv(out / "throughput.csv", index=False)
    manifest = bench_manifest(spec, options, results)
    (out / "bench.json").write_text(json.dumps(manifest, indent=1, default=str))
    (out / "summary.md").write_text(render_summary(results, manifest))
    try:
        figure = plot_curves(results)
    except SentuneError as err:
        log.warning("bench.html not written: %s", err)
    else:
        figure.write_html(out / "bench.html", include_plotlyjs=True, full_html=True)
    return results


def bench_manifest(spec: SearchSpec, options: BenchOptions, results: BenchResults) -> dict:
    """What the benchmark was: space, settings, seeds, target, commit, versions, host, device."""
    return {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "space": {
            "name": spec.name,
            "path": str(spec.path),
            "searched": sorted(spec.params),
            "fixed": spec.fixed,
        },
        "model": spec.model,
        "data": asdict(spec.data),
        "budget": asdict(spec.budget),
        "options": asdict(options),
        "methods": {name: asdict(METHODS[name]) for name in options.methods},
        "peer_unmapped": peer_unmapped(spec),
        "target": results.target,
        "target_source": results.target_source,
        "git_commit": runs.git_commit(),
        "versions": runs.package_versions(),
        "host": runs.host_description(),
        "device": runs.device_description(),
    }


def render_summary(results: BenchResults, manifest: dict) -> str:
    """`summary.md`: settings, the per-method table, throughput and the definitions."""
    options = manifest["options"]
    lines = [
        f"# Search strategies on `{manifest['space']['name']}`, {options['budget_s']:.0f} s each",
        "",
        f"- model `{manifest['model']}`, data `{manifest['data']['dataset']}` "
        f"(train {manifest['data']['train_size']}, val {manifest['data']['val_size']}), "
        f"searched: {', '.join(manifest['space']['searched']) or 'nothing'}",
        f"- fixed: {manifest['space']['fixed']}",
        f"- methods: {', '.join(options['methods'])}; seeds {list(options['seeds'])}",
        f"- target macro-F1 {results.target:.4f} ({results.target_source})",
        f"- peer cannot vary: {', '.join(manifest['peer_unmapped']) or 'nothing'}",
        f"- host {manifest['host']['name']} ({manifest['host']['cpus']} CPUs), "
        f"device {manifest['device']}, commit {manifest['git_commit']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}",
        "",
        "## Answers",
        "",
        *[f"- {line}" for line in headlines(results)],
        "",
        "## Methods (medians over seeds)",
        "",
        _markdown(results.summary),
        "",
        "## Runs",
        "",
        _markdown(results.results.drop(columns=["run_dir"])),
        "",
    ]
    if not results.throughput.empty:
        lines += [
            "## Throughput on one configuration (space's fixed values, defaults elsewhere)",
            "",
            _markdown(results.throughput),
            "",
        ]
    lines += [
        "## Definitions",
        "",
        __doc__.split("Definitions (also written into `summary.md`):")[1],
    ]
    return "\n".join(lines)


def headlines(results: BenchResults) -> list[str]:
    """The three questions answered in one line each, from the computed tables."""
    lines = []
    summary = results.summary
    if not summary.empty and PEER in set(summary["method"]):
        for row in summary[summary["method"] != PEER].itertuples(index=False):
            if np.isfinite(row.ttt_trial_s_median):
                reach = (
                    f"reaches the target {results.target:.4f} in {row.ttt_trial_s_median:.0f} "
                    f"trial-s / {row.ttt_wall_s_median:.0f} wall-s (median; {row.reached}/"
                    f"{row.seeds} seeds reach it): {row.speedup_vs_peer_trial_s:.2f}x / "
                    f"{row.speedup_vs_peer_wall_s:.2f}x the peer's speed"
                )
            else:
                # A median over seeds that did not all get there is infinite: no ratio to give.
                reach = (
                    f"does not reach the target {results.target:.4f} in the median seed "
                    f"({row.reached}/{row.seeds} seeds reach it), so no speed ratio"
                )
            lines.append(
                f"`{row.method}` {reach}; final best {row.final_best_median:.4f} "
                f"[{row.final_best_min:.4f}, {row.final_best_max:.4f}]"
            )
        peer = summary[summary["method"] == PEER].iloc[0]
        lines.append(
            f"`peer` final best {peer.final_best_median:.4f} "
            f"[{peer.final_best_min:.4f}, {peer.final_best_max:.4f}], "
            f"target reached in {peer.ttt_trial_s_median:.0f} trial-s (median)"
        )
    tpe = summary[summary["method"].str.startswith("tpe")] if not summary.empty else summary
    if len(tpe) and tpe["trials_median"].max() <= _TPE_STARTUP_TRIALS:
        lines.append(
            f"TPE draws its first {_TPE_STARTUP_TRIALS} trials at random, the same draws as the "
            "random sampler with the same seed (Optuna's n_startup_trials); with at most "
            f"{tpe['trials_median'].max():.0f} trials per search here, tpe-* and random-* "
            "differ only by timing and pruning, not by TPE's model: give a larger budget"
        )
    loops = results.throughput.set_index("loop") if not results.throughput.empty else None
    if loops is not None and {"sentune trial", "HF Trainer"} <= set(loops.index):
        trial, trainer = loops.loc["sentune trial"], loops.loc["HF Trainer"]
        lines.append(
            f"trial loop {trial.samples_per_s:.1f} samples/s vs plain Trainer "
            f"{trainer.samples_per_s:.1f} ({trial.samples_per_s / trainer.samples_per_s:.2f}x), "
            f"{trial.threads:.0f} thread(s); peak RSS {trial.peak_rss_mb:.0f} vs "
            f"{trainer.peak_rss_mb:.0f} MiB"
        )
        ray = results.results.loc[results.results["method"] != PEER, "overhead_s_mean"]
        if ray.notna().any():
            lines.append(
                f"overhead per trial outside training and evaluation: {ray.median():.1f} s "
                f"under Ray (median over runs) vs {trial.overhead_s:.1f} s for a direct "
                f"`run_trial` call: Ray costs about {ray.median() - trial.overhead_s:.1f} s "
                "per trial"
            )
    return lines


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)"
    shown = table.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def plot_curves(results: BenchResults):
    """Anytime curves of every method (median line, IQR band, min/max dotted), against
    cumulative trial-seconds and against wall seconds, with the target as a line."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise SentuneError("bench.html needs plotly: pip install plotly") from None
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("against cumulative trial-seconds", "against wall-clock seconds"),
        shared_yaxes=True,
    )
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    methods = list(dict.fromkeys(results.bands["method"]))
    for col, x in enumerate(("trial_s", "wall_s"), start=1):
        for i, method in enumerate(methods):
            band = results.bands[(results.bands["method"] == method) & (results.bands["x"] == x)]
            color = palette[i % len(palette)]
            show = col == 1
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([band["value"], band["value"][::-1]]),
                    y=np.concatenate([band["q75"], band["q25"][::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.2,
                    line={"width": 0},
                    hoverinfo="skip",
                    legendgroup=method,
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
            for stat in ("min", "max"):
                figure.add_trace(
                    go.Scatter(
                        x=band["value"],
                        y=band[stat],
                        mode="lines",
                        line={"color": color, "width": 1, "dash": "dot"},
                        legendgroup=method,
                        showlegend=False,
                        name=f"{method} {stat}",
                    ),
                    row=1,
                    col=col,
                )
            figure.add_trace(
                go.Scatter(
                    x=band["value"],
                    y=band["median"],
                    mode="lines",
                    line={"color": color, "width": 2, "shape": "hv"},
                    legendgroup=method,
                    showlegend=show,
                    name=method,
                ),
                row=1,
                col=col,
            )
        if not math.isnan(results.target):
            figure.add_hline(
                y=results.target, line={"dash": "dash", "color": "gray"}, row=1, col=col
            )
    figure.update_xaxes(title_text="cumulative trial-seconds", row=1, col=1)
    figure.update_xaxes(title_text="wall-clock seconds", row=1, col=2)
    figure.update_yaxes(title_text=f"best {config.OBJECTIVE} so far", row=1, col=1)
    figure.update_layout(
        title=f"Anytime curves: median, IQR band, min/max dotted; target {results.target:.4f}",
        template="plotly_white",
    )
    return figure


def print_results(results: BenchResults, out: Path) -> None:
    """Print the per-method table, the throughput table and where the files are."""
    with pd.option_context(
        "display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(f"\nTarget {config.OBJECTIVE} {results.target:.4f} ({results.target_source})")
        print(results.summary.to_string(index=False))
        if not results.throughput.empty:
            print("\nThroughput on one configuration:")
            print(results.throughput.to_string(index=False))
    print()
    for line in headlines(results):
        print(line.replace("`", ""))
    print(f"\nbench results: {out}")


__all__ = [
    "BenchOptions",
    "BenchResults",
    "METHODS",
    "Method",
    "MethodRun",
    "anytime_curve",
    "compute_results",
    "curve_bands",
    "headlines",
    "measure_throughput",
    "measure_trainer",
    "measure_trial_loop",
    "peer_training_args",
    "peer_unmapped",
    "peer_values",
    "run_benchmark",
    "run_isolated",
    "run_method",
    "run_peer",
    "run_tune",
    "step_values",
    "time_to_target",
    "trial_overheads",
]
