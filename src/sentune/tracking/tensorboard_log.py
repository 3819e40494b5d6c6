"""TensorBoard curves in each trial's folder, per optimizer step as the Hugging Face Trainer
draws them: `train/loss` and `train/learning_rate` at every step, each evaluation's metrics as
`eval/<metric>` at its step; `tensorboard --logdir trials/<run>` shows every trial's curves, and
its HParams tab a row per ended trial (its configuration, its last evaluation's metrics).

Written by the search's process (tensorboardX) into the trial's folder in Ray Tune's staging on
that machine, as Tune's own loggers write `result.json`: Tune copies that folder into the run,
local or in object storage, wherever the trial trained, and nothing is asked of a trial's node.
A trial's worker writing in its own folder would not do: Tune does not copy trial folders from
the workers into object storage unless told to sync every artifact. A resumed search appends a
new event file beside the old ones and writes only the steps after the last one drawn (the
run's tracking record keeps it), so no step is drawn twice.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sentune import config
from sentune.tracking.events import Evaluation, Outcome, StepRow, TrackerLog

LOSS, LEARNING_RATE = f"train/{config.LOSS}", f"train/{config.LEARNING_RATE}"
EVAL_PREFIX = "eval/"


class TensorBoardLog(TrackerLog):
    """One event writer per running trial."""

    name = "tensorboard"
    extra = ""

    def __init__(self):
        from tensorboardX import SummaryWriter

        self.writer_class = SummaryWriter
        self.writers: dict[str, Any] = {}
        #: Each running trial's configuration and last evaluation, for the HParams tab.
        self.hparams: dict[str, dict[str, Any]] = {}
        self.last: dict[str, dict[str, float]] = {}

    def start_trial(
        self,
        key: str,
        entry: dict[str, Any],
        *,
        params: dict[str, Any],
        tags: dict[str, str],
        folder: Path | None,
    ) -> dict[str, Any]:
        if folder is not None and key not in self.writers:
            folder.mkdir(parents=True, exist_ok=True)
            # Flushed after each evaluation (`log`): Tune copies the folder at its own times. A
            # file name of its own: tensorboardX names files by the second and the host, and a
            # writer that a retry or a resume opens in that second would replace the last one's.
            self.writers[key] = self.writer_class(
                str(folder), flush_secs=3600, filename_suffix=f".{uuid.uuid4().hex[:8]}"
            )
            self.hparams[key] = {
                k: v if isinstance(v, str | bool | int | float) else str(v)
                for k, v in params.items()
            }
        return {}

    def log(
        self, key: str, entry: dict[str, Any], evaluation: Evaluation | None, rows: list[StepRow]
    ) -> None:
        writer = self.writers.get(key)
        if writer is None:
            return
        for row in rows:
            writer.add_scalar(LOSS, row.loss, row.step)
            writer.add_scalar(LEARNING_RATE, row.learning_rate, row.step)
        if evaluation is not None:
            for name, value in evaluation.metrics.items():
                writer.add_scalar(EVAL_PREFIX + name, value, evaluation.step)
            self.last[key] = {EVAL_PREFIX + k: v for k, v in evaluation.metrics.items()}
        writer.flush()

    def end_trial(self, key: str, entry: dict[str, Any], outcome: Outcome) -> None:
        writer = self.writers.pop(key, None)
        params, last = self.hparams.pop(key, {}), self.last.pop(key, {})
        if writer is None:
            return
        if params and last:
            from tensorboardX.summary import hparams

            for summary in hparams(hparam_dict=params, metric_dict=last):
                writer.file_writer.add_summary(summary)
        writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
