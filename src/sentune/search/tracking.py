"""The Tune callback that tells the trackers (`sentune.tracking`) what the trials of an
experiment do: started, each evaluation with its optimizer steps, retried, ended and how.

It runs in the search's process, as Tune's loggers do, so a trial on any node of a cluster is
tracked without reaching a tracking server itself. It holds only where the run is; the trackers
are opened from the run's tracking record when the experiment starts (`setup`), so the callback
that Tune saves with an experiment and restores on `--resume` logs where that command's
trackers were opened and checked (`tracking.start`, which reads `--log-to` and the record).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sentune import config, runs

if TYPE_CHECKING:
    from sentune.runs import storage

log = logging.getLogger(__name__)


def tracking_callback(
    run_dir: Path | None = None, store: storage.Storage | None = None, *, prefix: str = ""
):
    """The callback of the experiment whose trials are in `run_dir/prefix` (`prefix` "" for the
    search, `runs.CONFIRM_DIR` for its confirmation); `run_dir` None: TensorBoard curves only,
    nothing recorded (a refit).

    A `TBXLoggerCallback` to Tune, which then adds no TensorBoard logger of its own: Tune's
    draws one point per evaluation at its iteration count (and the step rows as a histogram);
    this one draws every optimizer step (`tracking.tensorboard_log`). The class is defined on
    first use so that importing this module does not import Ray Tune.
    """
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.result import AUTO_RESULT_KEYS

    from sentune.tracking import Tracker

    def name_of(trial) -> str:
        return Path(trial.path).name

    class TrackingCallback(TBXLoggerCallback):
        def __init__(self):
            # Not Tune's TensorBoard writers: `Tracker` draws the curves.
            self.tracker: Tracker | None = None

        def __getstate__(self):
            # Tune saves the callback with the experiment: the trackers are opened again.
            return {**self.__dict__, "tracker": None}

        def setup(self, **info):
            try:
                self.tracker = Tracker.open(run_dir, store, prefix=prefix)
            except Exception as err:  # noqa: BLE001 - tracking never stops a search
                log.warning("the trackers are off for these trials (%s); TensorBoard only", err)
                self.tracker = Tracker.open(None)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.tracker.trial_started(
                name_of(trial), folder=Path(trial.local_path), trial_config=dict(trial.config)
            )

        def on_trial_result(self, iteration, trials, trial, result, **info):
            reported = {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS}
            self.tracker.trial_result(name_of(trial), reported)

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.tracker.trial_retrying(name_of(trial), runs.last_error_line(trial.error_file))

        def on_trial_complete(self, iteration, trials, trial, **info):
            epoch = (trial.last_result or {}).get(config.EPOCH)
            self.tracker.trial_ended(name_of(trial), epoch=epoch)

        def on_trial_error(self, iteration, trials, trial, **info):
            epoch = (trial.last_result or {}).get(config.EPOCH)
            error = runs.last_error_line(trial.error_file)
            self.tracker.trial_ended(name_of(trial), epoch=epoch, error=error)

        def on_trial_restore(self, iteration, trials, trial, **info):
            pass  # Tune's loggers reopen their files here; the trackers need nothing

        def on_trial_save(self, iteration, trials, trial, **info):
            pass

        def on_experiment_end(self, trials, **info):
            self.tracker.close()

    return TrackingCallback()
