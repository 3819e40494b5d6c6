"""Where a trial stands inside an epoch, for the terminal of the search that runs it; and what
each of its optimizer steps did, for the per-step curves of the trackers (`StepLog`).

A trial's worker writes it to a small file (`ProgressFile`, fed by `trial.run_trial`'s
`on_step`) that the search's process reads (`read_progress`): a trial whose epoch runs for
minutes (long texts on a CPU) gets a line every `config.PROGRESS_LINE_EVERY_S` instead of
silence, and the search's estimate counts the part of the epoch already trained. Ray-free, and
the trial loop's side of that exchange (the search's lines are `search/progress.py`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sentune import config

log = logging.getLogger(__name__)


class EpochProgress(NamedTuple):
    """Where a trial stands inside an epoch (what `trial.run_trial` passes to its `on_step` after
    each optimizer step)."""

    epoch: int  # the epoch in progress, counted from 1
    batches_done: int
    batches: int


class StepLog:
    """Each optimizer step's training loss and learning rate since the last evaluation, which
    reports them (`config.STEP_LOG`, through `rows`). A step's loss is the sum of its
    micro-batches' weighted losses, kept on the device and read with the others once per
    evaluation: no host sync per step. Not in checkpoints: a resumed trial reports again the
    steps it trains again (the trackers log each step once)."""

    def __init__(self):
        self._steps: list[list] = []  # [step, loss tensor, learning rate]

    def add(self, step: int, loss, learning_rate: float) -> None:
        """A micro-batch of optimizer step `step`: its share of the step's loss (a tensor, its
        weight applied) and the learning rate the step uses."""
        if self._steps and self._steps[-1][0] == step:
            self._steps[-1][1] = self._steps[-1][1] + loss
        else:
            self._steps.append([step, loss, learning_rate])

    def rows(self) -> list[list[float]]:
        """The steps since the last call as `[step, loss, learning rate]` rows, their losses read
        from the device in one transfer."""
        import torch

        steps, self._steps = self._steps, []
        if not steps:
            return []
        losses = torch.stack([loss for _, loss, _ in steps]).float().tolist()
        return [[step, loss, lr] for (step, _, lr), loss in zip(steps, losses, strict=True)]


class EpochProgressRecord(NamedTuple):
    """What `ProgressFile` writes: `EpochProgress`, the epoch's rate so far and, once known,
    the seconds from the command to this run's first training step."""

    epoch: int
    batches_done: int
    batches: int
    batches_per_s: float
    first_step_s: float | None = None


class ProgressFile:
    """A trial's `on_step`: writes where the trial stands inside its epoch, and how fast it goes,
    to `<folder>/<trial_id>.json` at most every `every_s` seconds.

    Best effort: where the folder is missing (a trial on another node of a cluster) or a write
    fails, the terminal only lacks the within-epoch lines; the trial never fails for it.

    Args:
        folder: Made by the search's process (`runs.progress_dir`); never created here.
        trial_id: Tune's id of the trial, which names its file.
        started_at: When the command started (`TrialSettings.started_at`, epoch seconds): the
            first call (right after the first training step) is written at once with the
            seconds since, so that the search says it then rather than at the first evaluation.
        every_s: Seconds between writes (`config.PROGRESS_WRITE_EVERY_S` by default).
        clock: Seconds, monotonic (a test passes a fake one).
    """

    def __init__(
        self,
        folder: Path,
        trial_id: str,
        *,
        started_at: float | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(folder) / f"{trial_id}.json"
        self.started_at = started_at
        self.every_s = config.PROGRESS_WRITE_EVERY_S if every_s is None else every_s
        self.clock = clock
        # The epoch, the time and its batches done when this process first saw it: the rate
        # is measured from there, after the epoch's (or a resumed run's) first step.
        self._epoch_start: tuple[int, float, int] | None = None
        self._written_at = 0.0
        self._first_step_s: float | None = None

    def __call__(self, step: EpochProgress) -> None:
        now = self.clock()
        first_call = self._epoch_start is None
        if first_call or self._epoch_start[0] != step.epoch:
            self._epoch_start, self._written_at = (step.epoch, now, step.batches_done), now
            if not first_call or self.started_at is None:
                return
            # The first step of this run: written at once, with the seconds since the command.
            self._first_step_s = time.time() - self.started_at
        elif now - self._written_at < self.every_s:
            return
        self._written_at = now
        _, started, first = self._epoch_start
        record = {
            "epoch": step.epoch,
            "batches_done": step.batches_done,
            "batches": step.batches,
            "batches_per_s": (step.batches_done - first) / max(now - started, 1e-9),
            "first_step_s": self._first_step_s,
        }
        staging = self.path.with_name(f".{self.path.name}.tmp")
        try:
            if self.path.parent.is_dir():
                staging.write_text(json.dumps(record))
                os.replace(staging, self.path)
        except OSError:
            log.debug("could not write %s", self.path, exc_info=True)


def read_progress(folder: Path) -> dict[str, EpochProgressRecord]:
    """The latest record of each trial that wrote one to `folder` (by trial id); a file being
    replaced or unreadable is skipped (its next write is read next time)."""
    records = {}
    try:
        paths = list(Path(folder).glob("*.json"))
    except OSError:
        return records
    for path in paths:
        try:
            records[path.stem] = EpochProgressRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
    return records
