"""MLflow: one experiment per space (or `--experiment`), a parent run per search named after the
run, a child run per trial (and per confirmation seed, tagged as such) with its configuration as
parameters, every evaluation's metrics at its optimizer step, the per-step training loss and
learning rate (`loss`, `learning_rate`, as Hugging Face's MLflow callback names them), and how
it ended (`sentune.status`; FINISHED, KILLED for a trial stopped early, FAILED). The parent
gets the winner, the analysis files and the exported model (optionally registered).

MLflow's client is used directly, from the search's process: only that process reaches the
server (a trial on another node of a cluster needs nothing), and the run ids kept in the run's
tracking record let a resumed search continue the same runs. Every call has a short timeout and
no retries (MLflow's defaults retry for minutes), so a server that is down costs a search one
failed call.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sentune import config, runs
from sentune.machine import environment
from sentune.tracking.events import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    STOPPED,
    Evaluation,
    Outcome,
    StepRow,
    TrackerLog,
)

log = logging.getLogger(__name__)

#: The tracking URI MLflow users set; `--tracking-uri` overrides it.
URI_ENV = "MLFLOW_TRACKING_URI"
#: MLflow's run status for each way a run ends.
RUN_STATUS = {COMPLETED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED", INTERRUPTED: "KILLED"}
STATUS_TAG = "sentune.status"
#: MLflow's limits: entities per `log_batch` call, characters of a parameter and of a tag.
_BATCH, _PARAM_CHARS, _TAG_CHARS = 1000, 6000, 5000


def default_uri() -> str:
    """The local store used when nothing names one: `mlruns/mlflow.db` (SQLite) here."""
    return f"sqlite:///{_default_dir().resolve() / config.MLFLOW_DB}"


def _default_dir() -> Path:
    return Path(config.MLFLOW_DIR)


def resolve(record: dict[str, Any], *, uri: str | None, experiment: str | None, space: str):
    """The tracking URI and experiment: the flags, else what the run recorded (a resumed search
    logs where it logged), else MLFLOW_TRACKING_URI and the space's name, else the local store."""
    return {
        "tracking_uri": uri
        or record.get("tracking_uri")
        or os.environ.get(URI_ENV)
        or default_uri(),
        "experiment": experiment or record.get("experiment") or space,
    }


class MlflowLog(TrackerLog):
    """The MLflow tracker of one run; `record` is its entry in the run's tracking record (URI,
    experiment, parent run)."""

    name = "mlflow"
    extra = "mlflow"

    def __init__(self, record: dict[str, Any]):
        from mlflow import MlflowClient

        _quiet_store_setup()
        self.record = dict(record)
        self.uri = record["tracking_uri"]
        if self.uri == default_uri():
            _default_dir().mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)
        #: Whether `open` made the parent run (an export of a search that was not tracked).
        self.made_parent = False

    # --- the search ---------------------------------------------------------------------------

    def open(self, *, run_name: str, manifest: runs.Manifest, reopen: bool) -> dict[str, Any]:
        with _limits(config.TRACKING_CHECK_TIMEOUT_S):
            experiment_id = self._experiment_id(self.record["experiment"])
            parent = self.record.get("parent_run_id")
            if parent and self._run_in(parent, experiment_id):
                if reopen:
                    self.client.update_run(parent, status="RUNNING")
            else:
                parent = self.client.create_run(
                    experiment_id, run_name=run_name, tags=_search_tags(manifest)
                ).info.run_id
                self._batch(parent, params=_search_params(manifest))
                self.made_parent = True
        self.record.update(experiment_id=experiment_id, parent_run_id=parent)
        return {"experiment_id": experiment_id, "parent_run_id": parent}

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        location = None
        if self.uri == default_uri():
            location = (_default_dir().resolve() / "artifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def _run_in(self, run_id: str, experiment_id: str) -> bool:
        """Whether run `run_id` exists in the experiment (not deleted)."""
        try:
            run = self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MLflow raises its own error for an unknown run
            return False
        info = run.info
        return info.experiment_id == experiment_id and info.lifecycle_stage != "deleted"

    def finish(self, outcome: Outcome) -> None:
        with _limits():
            parent = self.record["parent_run_id"]
            self.client.set_tag(parent, STATUS_TAG, outcome.words[:_TAG_CHARS])
            self.client.set_terminated(parent, status=RUN_STATUS[outcome.status])

    def log_outputs(self, files: list[Path], *, winner: dict[str, Any]) -> dict[str, Any]:
        parent = self.record["parent_run_id"]
        with _limits():
            for path in files:
                self.client.log_artifact(parent, str(path))
            tags = {f"sentune.{k}": v for k, v in winner.items() if k not in ("values", "score")}
            tags.update({f"winner.{k}": str(v) for k, v in winner.get("values", {}).items()})
            metrics = {config.VAL_MACRO_F1: winner["score"]} if "score" in winner else {}
            self._batch(parent, metrics=_metrics(metrics, step=0), tags=tags)
        return {}

    def log_export(
        self, folder: Path, *, metrics: dict[str, float], register: str | None
    ) -> dict[str, Any]:
        parent = self.record["parent_run_id"]
        with _limits():
            self.client.log_artifacts(parent, str(folder), artifact_path=MODEL_ARTIFACT)
            self._batch(parent, metrics=_metrics(metrics, step=0))
            if register:
                self._register(register, parent)
            if self.made_parent:  # no search will end it
                self.client.set_terminated(parent, status="FINISHED")
        return {}

    def _register(self, name: str, parent: str) -> None:
        """A new version of registered model `name` whose source is the export logged to the
        parent run (any MLflow store with a registry: SQLite or a server, offline too)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(parent).info.artifact_uri}/{MODEL_ARTIFACT}"
        version = self.client.create_model_version(name, source=source, run_id=parent)
        log.info("MLflow: registered the exported model as %s version %s", name, version.version)

    # --- the trials ---------------------------------------------------------------------------

    def start_trial(
        self,
        key: str,
        entry: dict[str, Any],
        *,
        params: dict[str, Any],
        tags: dict[str, str],
        folder: Path | None,
    ) -> dict[str, Any]:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        with _limits():
            if entry.get("run_id"):
                self.client.update_run(entry["run_id"], status="RUNNING")
                return {}
            run = self.client.create_run(
                self.record["experiment_id"],
                run_name=Path(key).name,
                tags={MLFLOW_PARENT_RUN_ID: self.record["parent_run_id"], **tags},
            )
            self._batch(run.info.run_id, params=params)
        return {"run_id": run.info.run_id}

    def log(
        self, key: str, entry: dict[str, Any], evaluation: Evaluation | None, rows: list[StepRow]
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, value, now, row.step)
            for row in rows
            for name, value in ((config.LOSS, row.loss), (config.LEARNING_RATE, row.learning_rate))
        ]
        if evaluation is not None:
            metrics += _metrics(evaluation.metrics, step=evaluation.step)
        with _limits():
            self._batch(entry["run_id"], metrics=metrics)

    def retrying(self, key: str, entry: dict[str, Any], reason: str) -> None:
        with _limits():
            self.client.set_tag(entry["run_id"], STATUS_TAG, f"retrying: {reason}"[:_TAG_CHARS])

    def end_trial(self, key: str, entry: dict[str, Any], outcome: Outcome) -> None:
        with _limits():
            self.client.set_tag(entry["run_id"], STATUS_TAG, outcome.words[:_TAG_CHARS])
            self.client.set_terminated(entry["run_id"], status=RUN_STATUS[outcome.status])

    def _batch(self, run_id: str, *, metrics=(), params=None, tags=None) -> None:
        """`log_batch` in MLflow's batch sizes."""
        from mlflow.entities import Param, RunTag

        entities: list[tuple[str, Any]] = [("metric", m) for m in metrics]
        entities += [("param", Param(k, str(v)[:_PARAM_CHARS])) for k, v in (params or {}).items()]
        entities += [("tag", RunTag(k, str(v)[:_TAG_CHARS])) for k, v in (tags or {}).items()]
        # Parameters and tags are at most 100 a call.
        size = _BATCH if not (params or tags) else 100
        for start in range(0, len(entities), size):
            chunk = entities[start : start + size]
            self.client.log_batch(
                run_id,
                metrics=[e for kind, e in chunk if kind == "metric"],
                params=[e for kind, e in chunk if kind == "param"],
                tags=[e for kind, e in chunk if kind == "tag"],
            )


#: Where the exported model sits among the parent run's artifacts.
MODEL_ARTIFACT = "model"


def _metrics(values: dict[str, float], *, step: int) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(name, float(value), now, step) for name, value in values.items()]


def _search_tags(manifest: runs.Manifest) -> dict[str, str]:
    return {
        "sentune.run": manifest.run,
        "sentune.space": manifest.space.name,
        "sentune.strategy": manifest.strategy,
        "sentune.searched": ", ".join(manifest.space.searched),
    }


def _search_params(manifest: runs.Manifest) -> dict[str, Any]:
    """What the whole search shares: model, data, budget and the space's fixed values."""
    budget = {f"budget.{k}": v for k, v in vars(manifest.budget).items()}
    data = {f"data.{k}": v for k, v in vars(manifest.data.config).items()}
    return {"model": manifest.model, **data, **budget, **manifest.space.fixed}


@contextmanager
def _limits(timeout_s: float = config.TRACKING_WRITE_TIMEOUT_S):
    """MLflow's HTTP calls in the block: no retries and a short timeout (its defaults retry for
    minutes: a server that went down would stall the search), unless the user set them."""
    values = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
    }
    with environment({k: v for k, v in values.items() if k not in os.environ}):
        yield


def _quiet_store_setup() -> None:
    """MLflow's SQLite store says at length how it creates its tables; sentune's lines suffice."""
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.sqlalchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
