"""The whole benchmark: prepare the data once, run each method on each seed with the same budget,
measure throughput, then write and print the results."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sentune import search, space
from sentune.bench.memory import run_isolated
from sentune.bench.methods import (
    METHODS,
    RAY_WORKER_NICENESS,
    UNLIMITED_TRIALS,
    BenchOptions,
    MethodRun,
)
from sentune.bench.peer import run_peer
from sentune.bench.render import print_results, write_results
from sentune.bench.throughput import measure_throughput
from sentune.bench.tune import run_tune
from sentune.data import PreparedData
from sentune.errors import SpaceError
from sentune.search.preflight import max_length_for_data
from sentune.space import SearchSpec

log = logging.getLogger(__name__)

_DEFAULT_OPTIONS = BenchOptions()


def run_benchmark(
    space_name: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    options: BenchOptions = _DEFAULT_OPTIONS,
) -> Path:
    """Run every method on every seed with the same budget; write and print the results.

    Args:
        space_name: A space in `search_spaces/` or a YAML path.
        overrides: Dotted-key overrides of the space (sizes, model, dataset, …).
        options: Methods, seeds, budget and where results go.

    Returns:
        The results folder `<out_root>/<timestamp>/`.
    """
    _check_options(options)
    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    specs = {
        seed: load_spec(space_name, overrides, seed=seed, options=options) for seed in options.seeds
    }
    data, model_path = _prepare(specs[options.seeds[0]], options)
    # max_length auto/quantiles resolve against the data once, so the peer sees the same values.
    specs = {s: max_length_for_data(spec, data, model_path)[0] for s, spec in specs.items()}
    base = specs[options.seeds[0]]
    storage = options.storage / f"bench-{stamp}"
    method_runs: list[MethodRun] = []
    throughput = pd.DataFrame()
    with _ray_if_needed(options):
        # Seeds outermost: a drift in machine load then touches every method alike.
        for seed in options.seeds:
            for name in options.methods:
                log.info("bench: %s, seed %d, %.0f s", name, seed, options.budget_s)
                method_runs.append(
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
    out = options.out_root / stamp
    results = write_results(out, method_runs, throughput, spec=base, options=options)
    print_results(results, out)
    return out


def load_spec(
    space_name: str | Path,
    overrides: dict[str, Any] | None,
    *,
    seed: int,
    options: BenchOptions,
) -> SearchSpec:
    """The space with the bench's budget: `budget_s` seconds, unlimited trials, this seed.

    Args:
        space_name: A space in `search_spaces/` or a YAML path.
        overrides: Dotted-key overrides of the space.
        seed: The search's seed (`budget.seed`).
        options: The benchmark's options (its budget).

    Returns:
        The validated space.
    """
    values = {
        **(overrides or {}),
        "budget.time_budget_s": options.budget_s,
        "budget.trials": UNLIMITED_TRIALS,
        "budget.seed": seed,
        # The bench compares what each strategy finds within its time budget; retraining the
        # winners over seeds afterwards would spend time outside it.
        "budget.confirm_seeds": 0,
    }
    return space.load(space_name, overrides=values)


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
    """Run one method of `METHODS` for one seed (the one factory every method goes through).

    Args:
        name: A name of `METHODS`.
        spec: The space with the bench's budget and this seed.
        seed: The seed.
        data: Prepared data (the peer's; Ray methods prepare theirs from the cache).
        model_path: The resolved encoder.
        storage: Where Ray Tune methods write their run folders.
        options: The benchmark's options.

    Returns:
        The search's evaluations.
    """
    method = METHODS[name]
    if method.strategy is None:
        kwargs = {
            "seed": seed,
            "budget_s": options.budget_s,
            "precision": options.precision,
            "device": options.device,
            "threads": options.peer_threads or os.cpu_count() or 1,
        }
        if options.isolate:  # a process of its own, as nice as Ray's trial workers
            return run_isolated(
                run_peer, spec, data, model_path, niceness=RAY_WORKER_NICENESS, **kwargs
            )
        return run_peer(spec, data, model_path, **kwargs)
    return run_tune(spec, method.strategy, seed=seed, storage=storage, options=options)


def _check_options(options: BenchOptions) -> None:
    if not options.methods:
        raise SpaceError(f"no methods to compare; give some of {', '.join(METHODS)}")
    for name in options.methods:
        if name not in METHODS:
            raise SpaceError(f"unknown bench method {name!r}; use some of {', '.join(METHODS)}")
    from sentune.train.device import resolve_device, resolve_precision

    # Before any search: a device or precision this host lacks fails now, not in every trial.
    resolve_precision(options.precision, resolve_device(options.device))


def _prepare(spec: SearchSpec, options: BenchOptions) -> tuple[PreparedData, str]:
    from sentune.data import prepare
    from sentune.train.encoders import resolve_model

    model_path = resolve_model(spec.model)
    return prepare(spec.data, model_path, cache_dir=options.cache_dir), model_path


def _ray_if_needed(options: BenchOptions):
    """Local Ray for the whole benchmark when a Ray Tune method is compared (started once, so
    that no search pays Ray's start-up), shut down after it."""
    if not any(METHODS[m].strategy for m in options.methods):
        return contextlib.nullcontext()
    return search.ray_session(search.SearchOptions(dashboard=False, num_cpus=options.num_cpus))
