"""Runs in object storage (`--storage s3://…`) against a real S3 protocol server: moto in server
mode on 127.0.0.1, started by the test. A search writes there, is SIGKILLed, resumes from there
with no finished trial lost, and the export reads its winner from there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import S3_BUCKET as BUCKET

from sentune import analysis, config, runs
from sentune.errors import RunError, StorageError
from sentune.runs import storage


def _fs():
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(f"s3://{BUCKET}")[0]


def _read(path: str) -> bytes:
    with _fs().open_input_stream(f"{BUCKET}/{path}") as src:
        return src.read()


def _files(prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    infos = _fs().get_file_info(selector)
    return sorted(
        i.path.removeprefix(f"{BUCKET}/{prefix}/") for i in infos if i.type == pafs.FileType.File
    )


# --- parsing -------------------------------------------------------------------------------


def test_a_folder_stays_local_and_a_uri_gets_a_mirror(tmp_path):
    local = storage.open_storage("trials", cache_dir=tmp_path)
    assert not local.remote and local.root == Path("trials")
    assert storage.open_storage("file:///data/trials").root == Path("/data/trials")
    remote = storage.open_storage("s3://bucket/team/runs/", cache_dir=tmp_path)
    assert remote.remote and remote.uri == "s3://bucket/team/runs"
    assert remote.root == tmp_path / config.MIRROR_DIR / "s3" / "bucket" / "team" / "runs"
    assert remote.tune_path("heads-1") == "s3://bucket/team/runs/heads-1"


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://KEY:SECRET@bucket/runs", "holds credentials"),
        ("gs://bucket/runs?access_token=abc", "holds credentials"),
        ("s3:///runs", "name a bucket"),
        ("s3://bucket/a/../b", "'..' is not allowed"),
    ],
)
def test_a_bad_uri_says_the_fix(uri, message, tmp_path):
    with pytest.raises(StorageError, match=message):
        storage.open_storage(uri, cache_dir=tmp_path)


# --- pull and push against the S3 server -----------------------------------------------------


def _checkpoint(folder: Path, score: float) -> None:
    folder.mkdir(parents=True)
    (folder / runs.STATE_FILE).write_text(json.dumps({"metrics": {config.VAL_MACRO_F1: score}}))
    (folder / runs.MODEL_CONFIG_FILE).write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / runs.TRAINING_STATE_FILE).write_bytes(b"s" * 1000)


def test_pull_fetches_the_best_checkpoint_whole_and_follows_deletions(s3_env, tmp_path):
    writer = storage.open_storage(f"s3://{BUCKET}/unit", cache_dir=tmp_path / "writer")
    run_dir = writer.run_dir("run-1")
    run_dir.mkdir(parents=True)
    (run_dir / runs.MANIFEST).write_text("{}")
    _checkpoint(run_dir / "t1" / "checkpoint_000000", 0.5)
    _checkpoint(run_dir / "t1" / "checkpoint_000001", 0.7)
    storage.push(writer, "run-1", [p for p in run_dir.rglob("*") if p.is_file()])
    assert storage.run_names(writer) == ["run-1"]

    reader = storage.open_storage(f"s3://{BUCKET}/unit", cache_dir=tmp_path / "reader")
    mirror = storage.resolve_run("run-1", reader)
    assert mirror == reader.run_dir("run-1")
    best, other = mirror / "t1" / "checkpoint_000001", mirror / "t1" / "checkpoint_000000"
    assert runs.best_checkpoint(mirror / "t1") == best
    assert (best / "model.safetensors").read_bytes() == b"w" * 1000
    assert not (best / runs.TRAINING_STATE_FILE).exists()  # Ray Tune resumes from the URI
    assert (other / runs.STATE_FILE).is_file() and not (other / "model.safetensors").exists()

    # The driver keeps the best checkpoint only; a later pull follows.
    removed = runs.keep_best_checkpoint(run_dir / "t1")
    storage.delete(writer, "run-1", removed)
    assert _files("unit/run-1") == sorted(
        [runs.MANIFEST, f"t1/checkpoint_000001/{runs.MODEL_CONFIG_FILE}",
         f"t1/checkpoint_000001/{runs.STATE_FILE}", "t1/checkpoint_000001/model.safetensors"]
    )  # fmt: skip
    storage.pull(reader, "run-1")
    assert not other.exists() and (best / "model.safetensors").is_file()

    with pytest.raises(RunError, match="no run 'nope'"):
        storage.pull(reader, "nope")


def test_a_missing_bucket_is_said_before_anything_is_written(s3_env, tmp_path):
    store = storage.open_storage("s3://no-such-bucket/runs", cache_dir=tmp_path)
    with pytest.raises(StorageError, match="no bucket 'no-such-bucket'; create it first"):
        storage.check_writable(store)


# --- a real search in object storage: SIGKILL, resume, export --------------------------------


def _trial_results(prefix: str) -> dict[str, list[dict]]:
    results = {}
    for path in _files(prefix):
        if path.count("/") == 1 and path.endswith("/result.json"):
            rows = [json.loads(line) for line in _read(f"{prefix}/{path}").decode().splitlines()]
            if rows:
                results[path.split("/")[0]] = [
                    {k: r[k] for k in (config.EPOCH, config.VAL_MACRO_F1)} for r in rows
                ]
    return results


def test_the_ledger_stores_each_result_and_the_status_in_the_bucket_at_once(tmp_path, monkeypatch):
    """Tune copies a trial's staging into the bucket every few seconds, with its state; the
    ledger uploads each result as Tune logs it and the status when the trial ends, so that a
    kill in between loses neither (also as unpickled from Tune's state, as a resumed search
    gets it)."""
    from types import SimpleNamespace

    from ray import cloudpickle  # what Ray Tune pickles its state with

    from sentune import search

    store = storage.open_storage("s3://b/runs", cache_dir=tmp_path)
    run_dir = store.run_dir("run")
    pushed = []
    monkeypatch.setattr(storage, "push", lambda s, name, paths=None: pushed.extend(paths))
    ledger = cloudpickle.loads(cloudpickle.dumps(search.trial_ledger(run_dir, run_dir, store)))
    staging = tmp_path / "staging" / "t1"
    staging.mkdir(parents=True)
    (staging / runs.PARAMS_FILE).write_text("{}")
    (staging / runs.RESULTS_FILE).write_text('{"epoch": 1}\n')
    trial = SimpleNamespace(
        local_path=str(staging),
        path="b/runs/run/t1",
        error_file=None,
        run_metadata=SimpleNamespace(num_failures=0),
    )
    ledger.on_trial_result(0, [], trial, {})
    assert pushed == [run_dir / "t1" / runs.PARAMS_FILE, run_dir / "t1" / runs.RESULTS_FILE]
    assert (run_dir / "t1" / runs.RESULTS_FILE).read_text() == '{"epoch": 1}\n'
    pushed.clear()
    ledger.on_trial_complete(0, [], trial)
    assert pushed == [run_dir / "t1" / runs.TRIAL_STATUS]
    assert runs.read_trial_status(run_dir / "t1")["status"] == runs.COMPLETED
    assert runs.read_trial_status(staging) == runs.read_trial_status(run_dir / "t1")


def _finished(prefix: str, status: str = runs.COMPLETED, error: str | None = None) -> set[str]:
    found = set()
    for path in _files(prefix):
        if path.count("/") == 1 and path.endswith(f"/{runs.TRIAL_STATUS}"):
            record = json.loads(_read(f"{prefix}/{path}"))
            if record["status"] == status and (error is None or record.get("error") == error):
                found.add(path.split("/")[0])
    return found


def _kill_tree(pid: int) -> None:
    """SIGKILL the driver, then any of its Ray processes still alive after 30 s (by pid)."""
    import psutil

    try:
        tree = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in tree[1:]):
        time.sleep(0.5)
    for child in tree[1:]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_search_in_s3_survives_sigkill_resumes_and_exports(
    s3_env, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    # The best configuration is retrained with a second seed after the search: the
    # confirmation (a Tune experiment inside the run) lives in the bucket too.
    space_file = write_tiny_space(
        tmp_path, tiny_model_dir, tiny_csv, trials=3, max_epochs=2, confirm_top=1, confirm_seeds=2
    )
    uri = f"s3://{BUCKET}/runs"
    env = {**os.environ, **s3_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "sentune.cli"]
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        [*command, "search", str(space_file), "--storage", uri, "--name", "tiny-s3",
         "--precision", "fp32", "--no-dashboard"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if len(_trial_results("runs/tiny-s3")) >= 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        _kill_tree(driver.pid)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    before, finished_before = _trial_results("runs/tiny-s3"), _finished("runs/tiny-s3")
    assert len(before) >= 2 and runs.MANIFEST in _files("runs/tiny-s3")

    # What a kill between a worker's checkpoint upload and the search's record of its trial
    # leaves (it depends on the kill's timing, so it is made here): a checkpoint, with its
    # training state, of a trial that the resumed experiment never knew.
    orphan = f"{BUCKET}/runs/tiny-s3/0rphan00/checkpoint_000000"
    for name in (runs.TRAINING_STATE_FILE, runs.STATE_FILE, runs.MODEL_CONFIG_FILE):
        with _fs().open_output_stream(f"{orphan}/{name}") as out:
            out.write(b"{}")

    # Another machine, as far as sentune knows: no mirror of the run (the token cache stays).
    mirror = tmp_path / config.CACHE_DIR / config.MIRROR_DIR
    shutil.rmtree(mirror)
    with (tmp_path / "resume.log").open("w") as log:
        resumed = subprocess.run(
            [*command, "search", "--resume", "tiny-s3", "--storage", uri, "--no-dashboard",
             "--analysis", "analysis"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600,
        )  # fmt: skip
    assert resumed.returncode == 0, (tmp_path / "resume.log").read_text()[-3000:]
    after = _trial_results("runs/tiny-s3")
    # Every trial's status is in the bucket, that of the trial that ended last too (Tune's own
    # last upload missed it 1 run in 4 before `search.settle_statuses`).
    # ...or, when the kill came after a trial's results reached the bucket but before Ray Tune
    # saved its state with that trial (a matter of timing), that trial is recorded as lost.
    lost = _finished("runs/tiny-s3", runs.ERROR, runs.LOST_ERROR)
    assert len(after) == 3 and _finished("runs/tiny-s3") | lost == set(after)
    assert len(lost) <= 1 and not lost & set(finished_before)
    for trial_id, rows in before.items():
        if trial_id in finished_before:
            assert after[trial_id] == rows  # a finished trial is kept as it was
        else:
            assert after[trial_id][: len(rows)] == rows  # continued, not restarted
    remote = _files("runs/tiny-s3")
    assert runs.OPTUNA_JOURNAL in remote
    for trial_id in after:  # each finished trial keeps its best checkpoint, without its state
        kept = {p.split("/")[1] for p in remote if p.startswith(f"{trial_id}/checkpoint_")}
        assert len(kept) == 1, remote
    assert not [p for p in remote if p.endswith(runs.TRAINING_STATE_FILE)]
    assert not [p for p in remote if p.startswith("0rphan00/")]
    confirmed = _finished(f"runs/tiny-s3/{runs.CONFIRM_DIR}")
    assert len(confirmed) == 1 and confirmed.pop().endswith("-seed1")
    assert (tmp_path / "analysis" / "tiny-s3" / analysis.CONFIRM_FILE).is_file()

    # The export reads the winner from object storage (the latest finished run there).
    shutil.rmtree(mirror)
    exported = subprocess.run(
        [*command, "export", "--storage", uri, "--formats", "hf", "--analysis", "analysis"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "using " in exported.stderr and "latest finished run" in exported.stderr
    board = (tmp_path / "analysis" / "tiny-s3" / analysis.LEADERBOARD_FILE).read_text().splitlines()
    best = board[1].split(",")[0]
    assert f"Exported trial {best} of " in exported.stdout
    metrics = json.loads(
        (tmp_path / "analysis" / "tiny-s3" / "export" / "metrics.json").read_text()
    )
    assert metrics


def test_the_trials_that_ended_agree_before_a_resume(tmp_path):
    """A kill between the journal's and the status's records of a trial's end: a trial that
    either holds as ended is ended in both before Tune restores the run (and its trainable
    then ends it at once); the others stay as they were."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from sentune import search

    run_dir = tmp_path / "run"
    for name in ("stored", "told", "running", "failed", "complete"):
        (run_dir / name).mkdir(parents=True)
        (run_dir / name / runs.PARAMS_FILE).write_text("{}")
    runs.write_trial_status(run_dir / "stored", runs.COMPLETED, failures=0)
    runs.write_trial_status(run_dir / "complete", runs.COMPLETED, failures=0)
    runs.write_trial_status(run_dir / "failed", runs.ERROR, failures=1, error="boom")
    journal = JournalStorage(JournalFileBackend(str(runs.optuna_journal(run_dir))))
    study = optuna.create_study(study_name="run", storage=journal, direction="maximize")
    for name, epochs in (("stored", 1), ("told", 1), ("running", 1), ("complete", 3)):
        trial = study.ask()
        trial.set_user_attr(runs.RAY_TRIAL_ID_ATTR, name)
        for epoch in range(1, epochs + 1):
            trial.report(0.5 + epoch / 10, epoch)
        if name == "told":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    store = storage.open_storage(tmp_path, cache_dir=tmp_path)

    finished = search.finished_trials(run_dir, run_dir, store, study=study, max_epochs=3)

    assert finished == {"stored", "told", "complete"}
    status = {n: runs.read_trial_status(run_dir / n).get("status") for n in ("told", "running")}
    assert status == {"told": runs.COMPLETED, "running": None}
    assert runs.read_trial_status(run_dir / "failed")["status"] == runs.ERROR
    states = {t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.get_trials()}
    assert states["stored"].state == optuna.trial.TrialState.PRUNED  # stopped at epoch 1 of 3
    assert states["complete"].state == optuna.trial.TrialState.COMPLETE
    assert states["complete"].value == pytest.approx(0.8)
    assert states["running"].state == optuna.trial.TrialState.RUNNING


@pytest.mark.parametrize("remote", [True, False])
def test_a_trial_tune_saved_as_finished_gets_its_status_when_the_search_resumes(
    tmp_path, monkeypatch, remote
):
    """A SIGKILL after Tune saved a trial as finished but before its status was stored left
    the trial without one: every resume then read the search as unfinished. The ledger
    settles Tune's restored finished trials at the first step of each fit, also when
    unpickled from Tune's state, and stores the status at once."""
    from types import SimpleNamespace

    from ray import cloudpickle

    from sentune import search

    storage_uri = "s3://b/runs" if remote else str(tmp_path / "trials")
    store = storage.open_storage(storage_uri, cache_dir=tmp_path)
    run_dir = store.run_dir("run")
    pushed = []
    monkeypatch.setattr(storage, "push", lambda s, name, paths=None: pushed.extend(paths))
    ledger = cloudpickle.loads(cloudpickle.dumps(search.trial_ledger(run_dir, run_dir, store)))
    trials = []
    for name, status in (("done", "TERMINATED"), ("running", "RUNNING"), ("failed", "TERMINATED")):
        (run_dir / name).mkdir(parents=True)
        (run_dir / name / runs.PARAMS_FILE).write_text("{}")
        trials.append(
            SimpleNamespace(
                status=status,
                path=f"b/runs/run/{name}" if remote else str(run_dir / name),
                local_path=str(tmp_path / "staging" / name),
                error_file=None,
                run_metadata=SimpleNamespace(num_failures=0),
            )
        )
    runs.write_trial_status(run_dir / "failed", runs.ERROR, failures=1, error="boom")
    ledger.setup()  # Tune, at the start of each fit
    ledger.on_step_begin(0, trials)
    assert runs.read_trial_status(run_dir / "done")["status"] == runs.COMPLETED
    assert runs.read_trial_status(run_dir / "running") == {}
    assert runs.read_trial_status(run_dir / "failed")["status"] == runs.ERROR
    assert pushed == [run_dir / "done" / runs.TRIAL_STATUS]
    # Once per fit: a trial Tune ends later gets its status from on_trial_complete.
    (run_dir / "done" / runs.TRIAL_STATUS).unlink()
    ledger.on_step_begin(1, trials)
    assert runs.read_trial_status(run_dir / "done") == {}
