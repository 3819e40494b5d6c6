"""Benchmark search strategies against each other and against the usual peer, on one budget.

Every method searches the same space on the same data and model for the same wall-clock budget,
once per seed:

- the Ray Tune strategies of `strategies.STRATEGIES` (Optuna TPE or random sampling, ASHA or FIFO);
- the peer: Hugging Face `Trainer.hyperparameter_search(backend="optuna")` with its standard recipe
  (`model_init`, truncation to max_length, `DataCollatorWithPadding`, evaluation each epoch,
  Optuna's defaults: TPE sampler, median pruner), stopped by the same wall-clock budget.

From each method's evaluations it computes the anytime curve (best validation macro-F1 so far
against cumulative trial-seconds, and against wall-clock seconds), the time to reach a target
macro-F1 and the final best; and, on one fixed configuration, the trial loop's throughput against
the plain `Trainer`, the evaluation time, Ray's overhead per trial and peak memory. Results go to
`analysis/bench/<timestamp>/`: `results.csv`, `curves.csv`, `bands.csv`, `throughput.csv`,
`summary.md`, `bench.html` and `bench.json` (machine, versions, seeds, settings). The terms are
defined in `curves.DEFINITIONS`.

Modules, one job each: `methods` (the registry, options, a search's record), `runner` (the whole
benchmark), `tune` (a Ray Tune method), `peer` (the Trainer's search), `trainer` (the Trainer
set-up the peer and the throughput share), `throughput` (trial loop vs Trainer, evaluation time),
`memory` (peak memory, a call in a fresh process), `curves` (the numbers), `render` (files and
the printed table).
"""

from sentune.lazy import lazy_exports

#: Each public name and the module that defines it: imported on first use (PEP 562), so
#: that `sentune --help` and a bad `--address` need not import the benchmark's dependencies
#: (scikit-learn, transformers' Trainer: seconds on a busy machine).
_PUBLIC = {
    "BenchResults": "curves",
    "DEFINITIONS": "curves",
    "anytime_curve": "curves",
    "compute_results": "curves",
    "curve_bands": "curves",
    "step_values": "curves",
    "summarise": "curves",
    "time_to_target": "curves",
    "trial_overheads": "curves",
    "peak_rss_mb": "memory",
    "run_isolated": "memory",
    "BenchOptions": "methods",
    "CPU_SIZES": "methods",
    "DEFAULT_METHODS": "methods",
    "METHODS": "methods",
    "Method": "methods",
    "MethodRun": "methods",
    "PEER": "methods",
    "peer_unmapped": "peer",
    "peer_values": "peer",
    "run_peer": "peer",
    "headlines": "render",
    "write_results": "render",
    "load_spec": "runner",
    "run_benchmark": "runner",
    "run_method": "runner",
    "Measurement": "throughput",
    "measure_throughput": "throughput",
    "measure_trainer": "throughput",
    "measure_trial_loop": "throughput",
    "build_trainer": "trainer",
    "training_fields": "trainer",
    "run_tune": "tune",
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_exports(__name__, _PUBLIC)
