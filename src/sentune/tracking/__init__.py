"""Searches logged to the tracking servers users run: MLflow (`--log-to mlflow`) and Weights &
Biases (`--log-to wandb`), and TensorBoard curves per optimizer step in every trial's folder.

The search's process logs, told by a Ray Tune callback (`search.tracking`): a trial's node needs
no tracker and no route to its server. Per trial, every evaluation's metrics at its optimizer
step and the training loss and learning rate of each step before it (`config.STEP_LOG`, which
the trial reports with the evaluation); its configuration; how it ended. Per search, the parent
run (MLflow) or group (W&B) with the winner, the analysis files and the exported model. The
run's tracking record (`runs.TRACKING_FILE`) keeps the ids and the last step logged, so that
`--resume` continues the same runs and logs no step twice.

Modules, one job each: `session` (the trackers of a command: opened and checked, told of the
trials, the search's end, its outputs; failures are one warning), `events` (what trackers are
told, plain data, and the interface each implements), `state` (the tracking record),
`mlflow_log`, `wandb_log`, `tensorboard_log` (one tracker each, their library imported there).
The libraries are optional extras: `pip install 'sentune[mlflow]'`, `'sentune[wandb]'`.
"""

from sentune.tracking.session import (
    Tracker,
    TrackingOptions,
    finish,
    log_export,
    log_search_outputs,
    logged,
    start,
)

__all__ = [
    "Tracker",
    "TrackingOptions",
    "finish",
    "log_export",
    "log_search_outputs",
    "logged",
    "start",
]
