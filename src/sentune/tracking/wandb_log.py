"""Weights & Biases: a project per space (or `--experiment`), a group per search named after the
run, a run per trial (job type `trial`, or `confirmation` with its seed) with its configuration,
a history of the per-step training loss and learning rate (`train/loss`,
`train/learning_rate`, as Hugging Face's W&B callback names them) and every evaluation's metrics
at its optimizer step, and how it ended in the summary (`sentune.status`). The search's own
outputs (analysis files, the exported model) go to a run of job type `search` in the group.

W&B's own settings apply: WANDB_MODE (`offline` writes runs to disk for a later `wandb sync`),
WANDB_DIR, WANDB_ENTITY, WANDB_API_KEY. Runs are made from the search's process, one per trial
at once (`reinit="create_new"`), and a resumed search continues them by id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sentune import config, runs
from sentune.tracking.events import FAILED, Evaluation, Outcome, StepRow, TrackerLog

log = logging.getLogger(__name__)

MODE_ENV = "WANDB_MODE"
#: Modes in which W&B writes to disk only, and needs neither a key nor a server.
LOCAL_MODES = ("offline", "dryrun", "disabled")
STATUS_KEY = "sentune.status"
LOSS, LEARNING_RATE = f"train/{config.LOSS}", f"train/{config.LEARNING_RATE}"


def resolve(record: dict[str, Any], *, experiment: str | None, space: str, run: str):
    """The project (the flag, else what the run recorded, else WANDB_PROJECT, else the space's
    name) and the group (the run's name)."""
    return {
        "project": experiment or record.get("project") or os.environ.get("WANDB_PROJECT") or space,
        "group": run,
    }


class WandbLog(TrackerLog):
    """The W&B tracker of one run; `record` is its entry in the run's tracking record."""

    name = "wandb"
    extra = "wandb"

    def __init__(self, record: dict[str, Any]):
        import wandb

        self.wandb = wandb
        self.record = dict(record)
        #: The open run of each trial being tracked, by key.
        self.open_runs: dict[str, Any] = {}

    def open(self, *, run_name: str, manifest: runs.Manifest, reopen: bool) -> dict[str, Any]:
        """W&B has no run that holds the others (a group does); the check is for credentials,
        unless W&B runs offline."""
        if os.environ.get(MODE_ENV, "online").lower() in LOCAL_MODES:
            return {}
        if not self.wandb.login(prompt=False, verify=True, timeout=config.TRACKING_CHECK_TIMEOUT_S):
            raise RuntimeError(
                "no W&B API key: run `wandb login` or set WANDB_API_KEY (or WANDB_MODE=offline)"
            )
        return {}

    def _init(self, *, run_id: str | None, name: str, job_type: str, config_: dict, tags=()):
        return self.wandb.init(
            project=self.record["project"],
            group=self.record["group"],
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            job_type=job_type,
            config=config_,
            tags=list(tags),
            reinit="create_new",
            settings=self.wandb.Settings(
                silent=True,
                console="off",
                init_timeout=config.TRACKING_WRITE_TIMEOUT_S * 3,
                x_disable_stats=True,
            ),
        )

    def start_trial(
        self,
        key: str,
        entry: dict[str, Any],
        *,
        params: dict[str, Any],
        tags: dict[str, str],
        folder: Path | None,
    ) -> dict[str, Any]:
        confirmation = tags.get("sentune.confirmation") == "true"
        run = self._init(
            run_id=entry.get("run_id"),
            name=Path(key).name,
            job_type="confirmation" if confirmation else "trial",
            config_={**params, **tags},
            tags=["confirmation"] if confirmation else (),
        )
        self.open_runs[key] = run
        return {"run_id": run.id}

    def log(
        self, key: str, entry: dict[str, Any], evaluation: Evaluation | None, rows: list[StepRow]
    ) -> None:
        run = self.open_runs[key]
        # W&B wants steps in order: the evaluation joins its step's row.
        history = {row.step: {LOSS: row.loss, LEARNING_RATE: row.learning_rate} for row in rows}
        if evaluation is not None:
            history.setdefault(evaluation.step, {}).update(evaluation.metrics)
        for step in sorted(history):
            run.log(history[step], step=step)

    def retrying(self, key: str, entry: dict[str, Any], reason: str) -> None:
        self.open_runs[key].summary[STATUS_KEY] = f"retrying: {reason}"

    def end_trial(self, key: str, entry: dict[str, Any], outcome: Outcome) -> None:
        run = self.open_runs.pop(key)
        run.summary[STATUS_KEY] = outcome.words
        run.finish(exit_code=1 if outcome.status == FAILED else 0)

    def log_outputs(self, files: list[Path], *, winner: dict[str, Any]) -> dict[str, Any]:
        summary = {f"sentune.{k}": v for k, v in winner.items()}
        return self._search_artifact("analysis", files, summary=summary)

    def log_export(
        self, folder: Path, *, metrics: dict[str, float], register: str | None
    ) -> dict[str, Any]:
        return self._search_artifact("model", [folder], summary=metrics)

    def _search_artifact(self, kind: str, paths: list[Path], *, summary: dict) -> dict[str, Any]:
        """Log files (or folders) as an artifact of the search's own run in the group."""
        run = self._init(
            run_id=self.record.get("search_run_id"),
            name=self.record["group"],
            job_type="search",
            config_={},
        )
        self.record["search_run_id"] = run.id
        artifact = self.wandb.Artifact(f"{self.record['group']}-{kind}", type=kind)
        for path in paths:
            if Path(path).is_dir():
                artifact.add_dir(str(path))
            else:
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        for k, v in summary.items():
            run.summary[k] = v
        run.finish()
        return {"search_run_id": run.id}

    def close(self) -> None:
        for run in self.open_runs.values():
            run.finish()
        self.open_runs.clear()
