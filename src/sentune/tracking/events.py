"""What the trackers are told, in plain data: a trial's evaluation and the optimizer steps before
it (split from what the trial reported), how a trial or a search ended, and what every tracker
answers to (`TrackerLog`). No tracker's library is imported here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

from sentune import config, runs


class StepRow(NamedTuple):
    """One optimizer step: its number, its training loss and the learning rate it used."""

    step: int
    loss: float
    learning_rate: float


class Evaluation(NamedTuple):
    """One evaluation: the optimizer step it followed and its numeric metrics by name."""

    step: int
    metrics: dict[str, float]


def split_result(result: dict[str, Any]) -> tuple[Evaluation | None, list[StepRow]]:
    """The evaluation and the step rows in what a trial reported (`train.trial`: its metrics,
    `config.STEP` and `config.STEP_LOG`). Non-numeric values (the precision's name) are left
    out; a result without a step has no evaluation."""
    rows = [
        StepRow(int(step), float(loss), float(lr))
        for step, loss, lr in result.get(config.STEP_LOG) or []
    ]
    step = result.get(config.STEP)
    if step is None:
        return None, rows
    metrics = {
        name: float(value)
        for name, value in result.items()
        if name not in (config.STEP, config.STEP_LOG) and _is_number(value)
    }
    return Evaluation(int(step), metrics), rows


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def new_since(
    last_step: int, evaluation: Evaluation | None, rows: list[StepRow]
) -> tuple[Evaluation | None, list[StepRow]]:
    """What a tracker has not logged yet, having logged every step up to `last_step`: a retried
    or resumed trial reports again the steps it trains again, and a tracker logs them once."""
    fresh = [row for row in rows if row.step > last_step]
    if evaluation is not None and evaluation.step <= last_step:
        evaluation = None
    return evaluation, fresh


def one_line(err: BaseException) -> str:
    """One short line for why a tracker's call failed (the OS error where a connection failed:
    MLflow's message wraps it in a page of urllib3's)."""
    text = " ".join(str(err).split())
    errno = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)
    if errno:
        return errno.group(0).strip()
    return (text or type(err).__name__)[:200]


#: How a tracked run ended: `COMPLETED`, `STOPPED` (early, by the scheduler), `FAILED`,
#: `INTERRUPTED` (the search stopped before it ended; a resume continues it).
COMPLETED, STOPPED, FAILED, INTERRUPTED = "completed", "stopped", "failed", "interrupted"


class Outcome(NamedTuple):
    """How a trial (or a whole search) ended: one of the statuses above and its words, e.g.
    `stopped by ASHA at rung 1`, `failed: ValueError: ...`."""

    status: str
    words: str


def trial_outcome(
    *, error: str | None, epoch: float | None, max_epochs: float, scheduler: str
) -> Outcome:
    """How a trial ended: failed (with Ray's last error line), stopped before `max_epochs` at
    its last evaluation's `epoch` (by ASHA at that rung, when ASHA schedules), or completed."""
    if error is not None:
        return Outcome(FAILED, f"failed: {error}")
    if epoch is not None and epoch < max_epochs:
        by = f"by ASHA at rung {epoch:g}" if scheduler == "asha" else f"at epoch {epoch:g}"
        return Outcome(STOPPED, f"stopped {by}")
    return Outcome(COMPLETED, COMPLETED)


def search_outcome(statuses: list[str | None], *, interrupted: BaseException | None) -> Outcome:
    """How a search ended, from its trials' recorded statuses (`runs.read_trial_status`; None for
    a trial without one) or the error that stopped it."""
    finished = [s for s in statuses if s in (runs.COMPLETED, runs.ERROR)]
    failed = statuses.count(runs.ERROR)
    if interrupted is not None:
        what = type(interrupted).__name__
        return Outcome(INTERRUPTED, f"interrupted ({what}) with {len(finished)} trials finished")
    if len(finished) < len(statuses):
        return Outcome(
            INTERRUPTED, f"interrupted with {len(finished)} of {len(statuses)} trials finished"
        )
    if statuses and failed == len(statuses):
        return Outcome(FAILED, f"every trial failed ({failed})")
    return Outcome(COMPLETED, f"{len(statuses)} trials, {failed} failed")


class TrackerLog:
    """One tracker (MLflow, W&B, TensorBoard) as the search's process tells it what happens.
    Each method may raise: `session.Tracker` turns a failure into one warning and goes on
    without that tracker. `entry` is the trial's record with this tracker (`TrackingState.trial`:
    its run id); what `open` and `start_trial` return is recorded (merged into it).

    Attributes:
        name: The tracker's name (`--log-to`).
        extra: The sentune extra that installs its library (`pip install sentune[extra]`).
    """

    name = ""
    extra = ""

    def open(self, *, run_name: str, manifest: runs.Manifest, reopen: bool) -> dict[str, Any]:
        """Check the tracker answers and takes writes, and make or continue what holds the
        search (MLflow's parent run); `reopen`: mark it running again (a resumed search)."""
        return {}

    def start_trial(
        self,
        key: str,
        entry: dict[str, Any],
        *,
        params: dict[str, Any],
        tags: dict[str, str],
        folder: Path | None,
    ) -> dict[str, Any]:
        """Make the trial's run, or continue the one in `entry` (a resumed or retried trial)."""
        return {}

    def log(
        self, key: str, entry: dict[str, Any], evaluation: Evaluation | None, rows: list[StepRow]
    ) -> None:
        """Log the steps (loss, learning rate) and the evaluation not logged yet."""

    def retrying(self, key: str, entry: dict[str, Any], reason: str) -> None:
        """The trial failed and continues from its latest checkpoint."""

    def end_trial(self, key: str, entry: dict[str, Any], outcome: Outcome) -> None:
        """The trial ended (`outcome`)."""

    def finish(self, outcome: Outcome) -> None:
        """The search ended (`outcome`)."""

    def log_outputs(self, files: list[Path], *, winner: dict[str, Any]) -> dict[str, Any]:
        """The search's analysis (leaderboard, report, the winner's configuration) and winner
        (`winner`: trial id, score, searched values, and the winner's run id here)."""
        return {}

    def log_export(
        self, folder: Path, *, metrics: dict[str, float], register: str | None
    ) -> dict[str, Any]:
        """The shipped model (the export folder) with its test scores; `register`: its name in
        a model registry."""
        return {}

    def close(self) -> None:
        """Release what is open (writers, W&B runs)."""
