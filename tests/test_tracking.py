"""Searches logged to MLflow (a real tracking server on 127.0.0.1), W&B (offline) and TensorBoard
per optimizer step, read back with each tool's own reader; a resumed trial logs each step once; a
tracking server that is down, or dies mid-search, costs one warning line and no trial."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from sentune import cli, config, runs, search, space, tracking
from sentune.config import BudgetConfig, DataConfig, TrialSettings
from sentune.runs import storage
from sentune.tracking import Tracker, TrackingOptions

SERVER_START_S = 120


# --- a tracking server and a run folder ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(NamedTuple):
    url: str
    pid: int
    wait: Callable[[], None]  # until it answers


@contextmanager
def _mlflow_server(folder: Path):
    """`mlflow server` on 127.0.0.1 (SQLite store and artifacts in `folder`), stopped by its
    process id (it runs uvicorn in a child process: the group the server leads is stopped).
    Yielded as soon as it is started: it takes tens of seconds to answer (`wait`)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    argv = [
        str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'm.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip
    with (folder / "server.log").open("w") as out:
        server = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"

    def wait() -> None:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                return
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not start: {(folder / 'server.log').read_text()}"
                    )
                time.sleep(0.5)

    try:
        yield _Server(url, server.pid, wait)
    finally:
        _stop(server.pid)
        server.wait(timeout=30)


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(url)


def _fake_run(folder: Path, name: str = "fake-run") -> Path:
    """A run folder with a manifest (what the trackers read), no trials."""
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    manifest = runs.Manifest(
        run=name,
        started="2026-01-01T00:00:00",
        space=runs.SpaceRecord(name="tiny", path="tiny.yaml", text="", searched=["head.dropout"]),
        model="tiny",
        model_path="tiny",
        data=runs.DataRecord(config=DataConfig(), fingerprint="x", label_names=["a", "b"]),
        budget=BudgetConfig(max_epochs=3),
        settings=TrialSettings(),
        strategy="tpe-asha",
    )
    runs.write_manifest(run_dir, manifest)
    return run_dir


def _result(step: int, steps: range, score: float, epoch: float) -> dict:
    """What a trial reports at an evaluation (`train.trial`), with its step rows."""
    return {
        config.VAL_MACRO_F1: score,
        config.EPOCH: epoch,
        config.STEP: step,
        "precision": "fp32",
        config.STEP_LOG: [[s, 1.0 / s, 1e-3] for s in steps],
    }


def _scalars(folder: Path) -> dict[str, list[int]]:
    """The steps of each scalar in a trial folder's TensorBoard event files (all of them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[str, list[int]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in accumulator.Scalars(tag))
    return steps


# --- without a search -----------------------------------------------------------------------------


def test_a_resumed_trial_continues_its_runs_and_logs_each_step_once(tmp_path, caplog):
    """A kill after a trial logged steps 1-4 and its evaluation: the resumed search (a new
    process: trackers opened again from the run's tracking record) reports steps 3-8 again from
    its checkpoint; MLflow's child run, its parent and TensorBoard's curves hold each step once."""
    run_dir = _fake_run(tmp_path)
    store = storage.open_storage(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'm.db'}"
    options = TrackingOptions(log_to=("mlflow",), tracking_uri=uri)
    trial_dir = tmp_path / "staging" / "t1"

    tracking.start(run_dir, store, options)
    tracker = Tracker.open(run_dir, store)
    tracker.trial_started("t1", folder=trial_dir, trial_config={"head.dropout": 0.1})
    tracker.trial_result("t1", _result(4, range(1, 5), 0.5, 1))
    tracker.close()  # killed here

    tracking.start(run_dir, store, TrackingOptions())  # `--resume` without the flag
    tracker = Tracker.open(run_dir, store)
    tracker.trial_started("t1", folder=trial_dir, trial_config={"head.dropout": 0.1})
    tracker.trial_result("t1", _result(4, range(3, 5), 0.5, 1))
    tracker.trial_result("t1", _result(8, range(5, 9), 0.6, 2))
    tracker.trial_ended("t1", epoch=2)
    tracker.close()
    tracking.finish(run_dir, store)

    client = _client(uri)
    experiment = client.get_experiment_by_name("tiny")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 1
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert child.data.params["head.dropout"] == "0.1"
    loss = client.get_metric_history(child.info.run_id, config.LOSS)
    assert sorted(m.step for m in loss) == list(range(1, 9))
    scores = client.get_metric_history(child.info.run_id, config.VAL_MACRO_F1)
    assert sorted(m.step for m in scores) == [4, 8]
    assert child.info.status == "KILLED"  # ended at epoch 2 of 3: stopped early
    assert child.data.tags["sentune.status"] == "stopped by ASHA at rung 2"
    curves = _scalars(trial_dir)
    assert sorted(curves["train/loss"]) == list(range(1, 9))
    assert sorted(curves["eval/val_macro_f1"]) == [4, 8]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_confirmation_seed_is_tagged_and_a_failure_says_why(tmp_path):
    run_dir = _fake_run(tmp_path)
    store = storage.open_storage(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'm.db'}"
    tracking.start(run_dir, store, TrackingOptions(log_to=("mlflow",), tracking_uri=uri))
    confirmation = Tracker.open(run_dir, store, prefix=runs.CONFIRM_DIR)
    trial_config = {"head.dropout": 0.1, runs.CONFIRMS_KEY: "t1", runs.SEED_KEY: 7}
    confirmation.trial_started("t1-seed7", folder=None, trial_config=trial_config)
    confirmation.trial_result("t1-seed7", _result(2, range(1, 3), 0.5, 1))
    confirmation.trial_ended("t1-seed7", epoch=1, error="ValueError: tokenizer and model disagree")
    client = _client(uri)
    (child,) = client.search_runs(
        [client.get_experiment_by_name("tiny").experiment_id], "tags.sentune.confirmation = 'true'"
    )
    assert child.info.run_name == "t1-seed7"
    assert child.data.tags["sentune.confirms"] == "t1" and child.data.tags["sentune.seed"] == "7"
    assert child.data.params == {"head.dropout": "0.1", runs.SEED_KEY: "7"}
    assert child.info.status == "FAILED"
    assert child.data.tags["sentune.status"] == "failed: ValueError: tokenizer and model disagree"
    record = runs.tracking_file(run_dir).read_text()
    assert f'"trial": "{runs.CONFIRM_DIR}/t1-seed7"' in record


def test_a_tracking_server_that_is_down_is_one_warning_and_nothing_else(tmp_path, caplog):
    run_dir = _fake_run(tmp_path)
    store = storage.open_storage(tmp_path)
    down = f"http://127.0.0.1:{_free_port()}"
    options = TrackingOptions(log_to=("mlflow",), tracking_uri=down)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        with tracking.logged(run_dir, store, options):
            tracker = Tracker.open(run_dir, store)
            tracker.trial_started("t1", folder=tmp_path / "t1", trial_config={})
            tracker.trial_result("t1", _result(2, range(1, 3), 0.5, 1))
            tracker.trial_ended("t1", epoch=3)
            tracker.close()
    assert time.monotonic() - started < 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"MLflow ({down}, experiment 'tiny') is unavailable: ")
    assert "going on without it" in warnings[0] and "\n" not in warnings[0]
    assert sorted(_scalars(tmp_path / "t1")["train/loss"]) == [1, 2]  # TensorBoard regardless


def test_a_missing_tracker_library_says_which_extra_to_install(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    run_dir = _fake_run(tmp_path)
    with caplog.at_level(logging.WARNING):
        opened = tracking.start(
            run_dir, storage.open_storage(tmp_path), TrackingOptions(log_to=("wandb",))
        )
    assert opened == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "pip install 'sentune[wandb]'" in warnings[0], warnings


def test_log_to_names_the_trackers(capsys):
    from sentune.cli import _parser
    from sentune.cli.options import tracking_options

    args = _parser().parse_args(["search", "x", "--log-to", "mlflow,wandb", "--log-to", "mlflow"])
    assert tracking_options(args).log_to == ("mlflow", "wandb")
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["search", "x", "--log-to", "neptune"])
    assert exit_.value.code == 2
    assert "'neptune': log to mlflow or wandb, or to both: mlflow,wandb" in capsys.readouterr().err


def test_results_files_keep_the_step_rows_out_of_the_histories(tmp_path):
    run_dir = _fake_run(tmp_path)
    trial_dir = run_dir / "t1"
    trial_dir.mkdir()
    (trial_dir / runs.PARAMS_FILE).write_text("{}")
    (trial_dir / runs.RESULTS_FILE).write_text(json.dumps(_result(4, range(1, 5), 0.5, 1)) + "\n")
    history = runs.open_run(run_dir).histories["t1"]
    assert config.STEP_LOG not in history.columns
    assert history[config.STEP].tolist() == [4]


# --- a real search, logged to a real MLflow server, W&B offline and TensorBoard -------------------

TRIALS, EPOCHS = 2, 2


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One MLflow server for this module's searches (the last test kills it), started before Ray
    (a session fixture too): it boots while Ray does."""
    with _mlflow_server(tmp_path_factory.mktemp("mlflow")) as started:
        yield started


@pytest.fixture(scope="module")
def tracked(server, ray_session, tiny_model_dir, tiny_csv, write_tiny_space, tmp_path_factory):
    """`sentune search --log-to mlflow,wandb` of 2 trials, W&B offline; its run folder."""
    folder = tmp_path_factory.mktemp("tracked")
    space_file = write_tiny_space(
        folder, tiny_model_dir, tiny_csv, trials=TRIALS, max_epochs=EPOCHS
    )
    argv = [
        "search", str(space_file), "--storage", str(folder / "trials"),
        "--analysis", str(folder / "analysis"), "--precision", "fp32", "--no-dashboard",
        "--name", "tracked", "--log-to", "mlflow,wandb", "--tracking-uri", server.url,
    ]  # fmt: skip
    server.wait()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the token cache (.cache/sentune)
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(folder))
        assert cli.main(argv) == 0
    return folder / "trials" / "tracked"


def _runs(url: str, experiment: str = "tiny"):
    client = _client(url)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def _results(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / runs.RESULTS_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_mlflow_holds_the_search_as_a_parent_and_a_child_run_per_trial(tracked, server):
    client, parents, children = _runs(server.url)
    assert [p.info.run_name for p in parents] == ["tracked"]
    parent = parents[0]
    assert len(children) == TRIALS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    trial_dirs = {d.name: d for d in runs.trial_dirs(tracked)}
    assert {c.info.run_name for c in children} == set(trial_dirs)
    for child in children:
        params, reports = child.data.params, _results(trial_dirs[child.info.run_name])
        # The searched values under their dotted keys, and the fixed ones.
        assert {"train.learning_rate", "head.dropout", "train.max_length"} <= set(params)
        scores = client.get_metric_history(child.info.run_id, config.VAL_MACRO_F1)
        assert [(m.step, m.value) for m in sorted(scores, key=lambda m: m.step)] == [
            (r[config.STEP], pytest.approx(r[config.VAL_MACRO_F1])) for r in reports
        ]
        loss = client.get_metric_history(child.info.run_id, config.LOSS)
        rate = client.get_metric_history(child.info.run_id, config.LEARNING_RATE)
        last = reports[-1][config.STEP]
        assert (
            sorted(m.step for m in loss) == sorted(m.step for m in rate) == list(range(1, last + 1))
        )
        epochs = reports[-1][config.EPOCH]
        if epochs < EPOCHS:
            assert child.info.status == "KILLED"
            assert child.data.tags["sentune.status"] == f"stopped by ASHA at rung {epochs:g}"
        else:
            assert child.info.status == "FINISHED"
            assert child.data.tags["sentune.status"] == "completed"
    # The winner, the leaderboard, the report and the winner's configuration on the parent.
    assert parent.info.status == "FINISHED"
    winner = parent.data.tags["sentune.winner"]
    assert winner in trial_dirs
    assert parent.data.tags["sentune.winner_run_id"] in {c.info.run_id for c in children}
    assert config.VAL_MACRO_F1 in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "leaderboard.csv", "report.html"} <= artifacts


@pytest.mark.slow
def test_wandb_offline_holds_a_run_per_trial_with_config_and_history(tracked):
    folder = tracked.parent.parent / "wandb"
    records = {}
    for path in folder.glob("offline-run-*/run-*.wandb"):
        records[path] = list(_wandb_records(path))
    trials = {}
    for rows in records.values():
        run = next(r.run for r in rows if r.WhichOneof("record_type") == "run")
        if run.job_type != "trial":
            continue
        assert run.run_group == "tracked" and run.project == "tiny"
        trial_config = {u.key: json.loads(u.value_json) for u in run.config.update}
        history = [
            {
                i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json)
                for i in r.history.item
            }
            for r in rows
            if r.WhichOneof("record_type") == "history"
        ]
        trials[run.display_name] = (trial_config, history)
    assert set(trials) == {d.name for d in runs.trial_dirs(tracked)}
    for name, (trial_config, history) in trials.items():
        assert "train.learning_rate" in trial_config and "head.dropout" in trial_config
        reports = _results(tracked / name)
        scores = [(h["_step"], h[config.VAL_MACRO_F1]) for h in history if config.VAL_MACRO_F1 in h]
        assert scores == [(r[config.STEP], pytest.approx(r[config.VAL_MACRO_F1])) for r in reports]
        losses = [h["_step"] for h in history if "train/loss" in h]
        assert losses == list(range(1, reports[-1][config.STEP] + 1))


def _wandb_records(path: Path):
    """The records of a W&B offline run file (LevelDB's log format, W&B's header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left  # a block's tail too short for a header is padding
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow
def test_tensorboard_draws_every_step_in_each_trial_folder(tracked):
    for trial_dir in runs.trial_dirs(tracked):
        reports = _results(trial_dir)
        curves = _scalars(trial_dir)
        steps = list(range(1, reports[-1][config.STEP] + 1))
        assert sorted(curves["train/loss"]) == sorted(curves["train/learning_rate"]) == steps
        assert sorted(curves["eval/val_macro_f1"]) == [r[config.STEP] for r in reports]


@pytest.mark.slow
def test_the_export_is_logged_to_the_parent_run_and_registered(tracked, server, tmp_path):
    folder = tracked.parent.parent
    argv = [
        "export", str(tracked), "--formats", "hf", "--out", str(tmp_path / "export"),
        "--storage", str(folder / "trials"), "--analysis", str(folder / "analysis"),
        "--cache-dir", str(folder / ".cache" / "sentune"), "--register", "tiny-sentiment",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(folder))
        assert cli.main(argv) == 0
    client, parents, _ = _runs(server.url)
    parent = parents[0]
    model = {a.path for a in client.list_artifacts(parent.info.run_id, "model")}
    assert {"model/config.json", "model/metrics.json", "model/README.md"} <= model, model
    assert "test_macro_f1" in parent.data.metrics
    versions = client.search_model_versions("name='tiny-sentiment'")
    assert [v.run_id for v in versions] == [parent.info.run_id]


# A factory: Ray's pickler sends a nested function by value (the ledger's hook is saved with
# Tune's state), so nothing needs this test module.
def _kill_after_first_trial(pid: int):
    def hook(point, trial):
        if point == "after-status":
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    return hook


@pytest.mark.slow
def test_a_server_killed_mid_search_costs_one_warning_and_no_trial(
    server, ray_session, tiny_model_dir, tiny_csv, write_tiny_space, tmp_path, caplog
):
    """Last in this module: it kills the module's server."""
    server.wait()
    url, pid = server.url, server.pid
    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=2, max_epochs=1)
    options = search.SearchOptions(
        storage=tmp_path / "trials",
        precision="fp32",
        cache_dir=tmp_path / "cache",
        dashboard=False,
        name="killed",
        ledger_hook=_kill_after_first_trial(pid),
        tracking=TrackingOptions(log_to=("mlflow",), tracking_uri=url, experiment="killed"),
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        run_dir = search.run(space.load(space_file), options=options)
    took = time.monotonic() - started
    statuses = [runs.read_trial_status(d).get("status") for d in runs.trial_dirs(run_dir)]
    assert statuses == [runs.COMPLETED, runs.COMPLETED]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ours = [w for w in warnings if "mlflow" in w.lower()]
    assert len(ours) == 1, warnings
    warnings = ours
    assert warnings[0].startswith("MLflow stopped answering: ") and "going on" in warnings[0]
    assert took < 120, took


def test_a_trial_reports_each_optimizer_step_with_its_evaluation(
    tiny_csv, tiny_model_dir, tmp_path
):
    """`config.STEP_LOG`: every optimizer step once, in order, up to the evaluation's step; a
    step's loss is its micro-batches' (accumulation 2: two batches a step)."""
    from sentune.data import prepare
    from sentune.train.trial import run_trial

    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    trial_config = {
        "train.learning_rate": 2e-3,
        "train.batch_size": 16,
        "train.effective_batch_size": 32,
        "train.max_length": 32,
    }
    settings = TrialSettings(
        model=str(tiny_model_dir), max_epochs=1, precision="fp32", checkpoint_dir=str(tmp_path)
    )
    reports = []
    run_trial(trial_config, data, lambda m, c: reports.append(m), settings=settings)
    rows = [row for metrics in reports for row in metrics[config.STEP_LOG]]
    assert [row[0] for row in rows] == list(range(1, reports[-1][config.STEP] + 1))
    for metrics in reports:
        steps = metrics[config.STEP_LOG]
        assert steps[-1][0] == metrics[config.STEP]
        mean = sum(loss for _, loss, _ in steps) / len(steps)
        assert mean == pytest.approx(metrics[config.TRAIN_LOSS], rel=0.05)
    rates = [lr for _, _, lr in rows]
    assert max(rates) <= 2e-3 and rates[0] < rates[len(rates) // 2]  # warmup, then decay
