"""A search SIGKILLed at a chosen point of a trial's end, then resumed: the trial stays as it
ended. When ASHA stops a trial, one step of Tune's loop tells the Optuna journal, then the
ledger stores the trial's status, and Tune saves its own state seconds later; a kill between
them used to leave Tune's state with the trial running, and the resumed search trained the
stopped trial further (an extra epoch, a different score). The ledger's `hook` kills the driver
at each point, so each ordering is forced instead of hoped for; `test_faults.py` and
`test_storage.py` keep a kill at a real, unplanned time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from sentune import analysis, config, runs

pytestmark = pytest.mark.slow

MAX_EPOCHS = 3

# The driver, in its own process (the hook SIGKILLs it). The hook is pickled with Tune's state
# and comes back with a resumed search: the marker file makes it kill once.
DRIVER = """
import os, signal, sys
from pathlib import Path
from sentune import runs, search, space

space_file, storage, cache, point, marker, which, max_epochs = sys.argv[1:8]

def kill_at(point, marker, which, max_epochs):
    def hook(reached, trial):
        if which == "confirm":  # a confirmation trial, which trains the whole budget
            cut = runs.CONFIRMS_KEY in trial.config
        else:  # a trial that ASHA stopped before the budget
            cut = (trial.last_result or {}).get("epoch", max_epochs) < max_epochs
        if reached == point and cut and not os.path.exists(marker):
            Path(marker).write_text(Path(trial.path).name)
            os.kill(os.getpid(), signal.SIGKILL)
    return hook

options = search.SearchOptions(
    storage=storage, cache_dir=Path(cache), precision="fp32", dashboard=False, name="killed",
    ledger_hook=kill_at(point, marker, which, int(max_epochs)),
)
search.run(space.load(space_file), options=options)
"""


def _run_killed(
    tmp_path: Path, space_file: Path, storage: str, point: str, env: dict, which: str = "stopped"
) -> str:
    """Run the search until the hook kills it at `point` of a `which` trial's end (`stopped`
    by ASHA, or a `confirm`ation trial); end its Ray processes; return the trial's folder name."""
    marker = tmp_path / "killed-trial"
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(space_file), storage,
         str(tmp_path / config.CACHE_DIR), point, str(marker), which, str(MAX_EPOCHS)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            try:
                family |= {c.pid for c in psutil.Process(driver.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(timeout=30)
        log.close()
        _end(family)
    text = (tmp_path / "first.log").read_text()[-3000:]
    assert driver.returncode == -signal.SIGKILL, text
    assert marker.is_file(), f"no trial was stopped early before the search ended:\n{text}"
    return marker.read_text()


def _end(pids: set[int]) -> None:
    """Ray's processes share the killed driver's fate within seconds; end any straggler."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.5)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _resume(tmp_path: Path, run: str, storage: str, env: dict) -> None:
    resumed = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "search", "--resume", run, "--storage", storage,
         "--no-dashboard", "--analysis", "analysis"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def _epochs(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Each trial's evaluations as (epoch, when Tune logged it): a trial trained again after the
    resume logs its epochs anew, with other times, even where its scores come out the same."""
    return {
        path.parent.name: [
            (row[config.EPOCH], row["timestamp"])
            for row in map(json.loads, path.read_text().splitlines())
        ]
        for path in run_dir.glob(f"*/{runs.RESULTS_FILE}")
    }


def _check_kept(run_dir: Path, killed: str, before: dict[str, list[float]]) -> None:
    """The cut trial kept its epochs, status and journal record; every trial finished."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    after = _epochs(run_dir)
    assert after[killed] == before[killed], (killed, before[killed], after[killed])
    assert len(after[killed]) < MAX_EPOCHS
    statuses = {d.name: runs.read_trial_status(d).get("status") for d in runs.trial_dirs(run_dir)}
    assert set(statuses.values()) == {runs.COMPLETED}, statuses
    journal = JournalStorage(JournalFileBackend(str(runs.optuna_journal(run_dir))))
    study = optuna.load_study(study_name=runs.read_manifest(run_dir).optuna_study, storage=journal)
    (told,) = [t for t in study.trials if t.user_attrs[runs.RAY_TRIAL_ID_ATTR] == killed]
    assert told.state == optuna.trial.TrialState.PRUNED
    assert sorted(told.intermediate_values) == [int(e) for e, _ in before[killed]]


def _env(**extra) -> dict:
    # Tune saves its state at every step of its loop (its own knob; every few seconds by
    # default): the state then holds each trial as running from its start, as a trial that
    # ran longer than the period is, and a kill at the trial's end finds it so.
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    env.update(extra)
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.mark.parametrize("point", ["before-status", "after-status"])
def test_a_trial_killed_at_its_end_stays_ended_after_resume(
    point, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=4)
    storage, env = str(tmp_path / "trials"), _env()
    killed = _run_killed(tmp_path, space_file, storage, point, env)
    run_dir = tmp_path / "trials" / "killed"
    before = _epochs(run_dir)
    _resume(tmp_path, str(run_dir), storage, env)
    _check_kept(run_dir, killed, before)


@pytest.mark.parametrize("point", ["before-status", "after-status"])
def test_a_trial_killed_at_its_end_stays_ended_in_object_storage(
    point, s3_env, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    from sentune.runs import storage as stores

    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=4)
    uri, env = "s3://sentune-test/kill-points-" + point, _env(**s3_env)
    killed = _run_killed(tmp_path, space_file, uri, point, env)
    store = stores.open_storage(uri, cache_dir=tmp_path / "reader")
    before = _epochs(stores.pull(store, "killed", bodies=False))
    _resume(tmp_path, "killed", uri, env)
    _check_kept(stores.pull(store, "killed", bodies=False), killed, before)


def test_a_confirmation_trial_killed_at_its_end_stays_ended_after_resume(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """The confirmation over seeds is a Tune experiment of its own, restored the same way."""
    space_file = write_tiny_space(
        tmp_path, tiny_model_dir, tiny_csv, trials=2, max_epochs=2, confirm_top=1, confirm_seeds=2
    )
    storage, env = str(tmp_path / "trials"), _env()
    killed = _run_killed(tmp_path, space_file, storage, "after-status", env, which="confirm")
    confirm_dir = tmp_path / "trials" / "killed" / runs.CONFIRM_DIR
    before = _epochs(confirm_dir)
    _resume(tmp_path, str(tmp_path / "trials" / "killed"), storage, env)
    assert _epochs(confirm_dir)[killed] == before[killed]
    assert runs.read_trial_status(confirm_dir / killed)["status"] == runs.COMPLETED
    assert (tmp_path / "analysis" / "killed" / analysis.CONFIRM_FILE).is_file()


def test_a_resume_whose_saved_limiter_still_counts_an_ended_trial_finishes(
    tmp_path, write_tiny_space, tiny_model_dir, tiny_csv
):
    """Tune saves its concurrency limiter apart from its trial list; a run in object storage
    uploads the two at different times, and after a SIGKILL the limiter may count as running a
    trial the list holds as ended (seen in CI). With one trial at a time the resumed search
    then waited forever; the resume releases such trials first."""
    import pickle

    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=2, max_epochs=1)
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "sentune.cli", "search"]
    common = ["--storage", str(tmp_path / "trials"), "--no-dashboard"]
    first = subprocess.run(
        [*command, str(space_file), "--name", "stale", "--precision", "fp32", *common],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "trials" / "stale"
    trials = [d.name for d in runs.trial_dirs(run_dir)]
    (saved,) = sorted(run_dir.glob("search_gen_state-*.json"))
    state = pickle.loads(saved.read_bytes())
    # As the CI run had it: one suggestion counted, the first trial still live.
    state["counter"] = 1
    state["name:ConcurrencyLimiter"]["live_trials"] = {trials[0]}
    state["name:ConcurrencyLimiter"]["num_unfinished_live_trials"] = 1
    saved.write_bytes(pickle.dumps(state))
    resumed = subprocess.run(
        [*command, "--resume", str(run_dir), *common],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(d.name for d in runs.trial_dirs(run_dir)) == sorted(trials)
