"""Fault tolerance of a real search: failed trials retried from their checkpoint, an errored trial
recorded with its reason, a SIGKILLed driver resumed, and every Ray service kept on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentune import config, runs, search, space
from sentune.analysis import COMPLETED, ERROR, STOPPED, leaderboard
from sentune.runs import TRAINING_STATE_FILE, open_run

pytestmark = pytest.mark.slow


# Trial hooks are built by factories: Ray's pickler sends a nested function by value, so the
# trial workers need not import this test module.
def _fail_once():
    """A trial hook: the first attempt fails after its first evaluation; a retry goes on."""

    def hook(metrics, resumed):
        if not resumed:
            raise RuntimeError("injected failure (error-once)")

    return hook


def _out_of_memory():
    """A trial hook: every attempt runs out of memory after its first evaluation."""

    def hook(metrics, resumed):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")

    return hook


def _slow_wind_down(seconds: float):
    """A trial hook: from its first evaluation on, the trial's worker takes `seconds` longer to
    wind down a stopped trial (as `release_memory` can on a busy machine or a large GPU)."""

    def hook(metrics, resumed):
        import time

        from sentune.train import trial

        release = trial.release_memory
        if getattr(release, "slowed", False):
            return

        def slow_release():  # once per trial: Ray's pooled worker goes on to other tests
            trial.release_memory = release
            time.sleep(seconds)
            release()

        slow_release.slowed = True
        trial.release_memory = slow_release

    return hook


def _spec(folder: Path, write_tiny_space, model_dir, csv, **budget):
    return space.load(write_tiny_space(folder, model_dir, csv, **budget))


def _options(folder: Path, **values) -> search.SearchOptions:
    return search.SearchOptions(
        storage=folder / "trials",
        precision="fp32",
        cache_dir=folder / "cache",
        dashboard=False,
        **values,
    )


def _epochs(trial_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    return [row[config.EPOCH] for row in rows]


def test_a_failed_trial_is_retried_from_its_checkpoint(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    spec = _spec(
        tmp_path, write_tiny_space, tiny_model_dir, tiny_csv,
        trials=2, max_epochs=2, concurrency=2,
    )  # fmt: skip
    options = _options(tmp_path, strategy="random-fifo", trial_hook=_fail_once())
    run_dir = search.run(spec, options=options)
    table = leaderboard(open_run(run_dir))
    assert len(table) == 2
    assert (table["status"] == COMPLETED).all() and table["error"].eq("").all()
    for trial_id in table["trial_id"]:
        trial_dir = run_dir / trial_id
        # Ray recorded the failure; the retry continued after epoch 1 instead of starting over.
        assert "injected failure" in (trial_dir / "error.txt").read_text()
        assert _epochs(trial_dir) == [1, 2]
        status = json.loads((trial_dir / runs.TRIAL_STATUS).read_text())
        assert status == {"status": "completed", "failures": 1}
        kept = list(trial_dir.glob("checkpoint_*"))
        assert len(kept) == 1 and not (kept[0] / TRAINING_STATE_FILE).exists()


def test_a_trial_that_keeps_failing_is_recorded_with_its_reason(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, capsys
):
    from sentune import cli

    spec = _spec(tmp_path, write_tiny_space, tiny_model_dir, tiny_csv, trials=1, max_epochs=3)
    options = _options(tmp_path, max_failures=1, strategy="tpe-fifo", trial_hook=_out_of_memory())
    run_dir = search.run(spec, options=options)
    table = leaderboard(open_run(run_dir))
    assert table["status"].tolist() == [ERROR]
    assert "out of memory" in table["error"][0]
    assert "lower train.batch_size and keep train.effective_batch_size" in table["error"][0]
    # Two attempts: the retry continued from epoch 1's checkpoint and failed after epoch 2.
    trial_dir = run_dir / table["trial_id"][0]
    assert _epochs(trial_dir) == [1, 2]
    assert json.loads((trial_dir / runs.TRIAL_STATUS).read_text())["failures"] == 2
    assert cli.main(["leaderboard", str(run_dir), "--analysis", str(tmp_path / "a")]) == 0
    assert "failed: " in capsys.readouterr().out


def test_a_worker_slow_to_wind_down_still_takes_the_next_trial(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """Ray hands a finished trial's worker to the next trial only once the trial's thread has
    ended; past Ray's 2-second default it fails the handover and (Ray 2.60) never starts the next
    trial. A slower wind-down must only delay the next trial. (Should it hang again, the time
    budget ends the search once Tune's 10-minute wait for a new trial runs out.)"""
    spec = _spec(
        tmp_path, write_tiny_space, tiny_model_dir, tiny_csv,
        trials=3, max_epochs=2, time_budget_s=150,
    )  # fmt: skip
    options = _options(tmp_path, strategy="random-asha", trial_hook=_slow_wind_down(3))
    run_dir = search.run(spec, options=options)
    table = leaderboard(open_run(run_dir))
    assert len(table) == 3
    assert table["status"].isin([COMPLETED, STOPPED]).all(), table[["status", "error"]]
    assert table["error"].eq("").all()
    pids = {
        json.loads(path.read_text().splitlines()[0])["pid"]
        for path in run_dir.glob("*/result.json")
    }
    assert len(pids) < 3  # the trials shared workers: the handover itself was tested


def _ray_listeners(root_pid: int) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of `root_pid`'s tree."""
    import psutil

    found = set()
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port, proc.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _is_loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or ip).is_loopback


def _trial_results(run_dir: Path) -> dict[str, list[dict]]:
    results = {}
    for path in sorted(run_dir.glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            results[path.parent.name] = [
                {k: row[k] for k in (config.EPOCH, config.VAL_MACRO_F1, config.VAL_LOSS)}
                for row in rows
            ]
    return results


def _finished(run_dir: Path) -> set[str]:
    return {
        p.parent.name
        for p in run_dir.glob(f"*/{runs.TRIAL_STATUS}")
        if json.loads(p.read_text())["status"] == "completed"
    }


def test_sigkilled_driver_resumes_without_losing_finished_trials(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """Kill -9 the `sentune search` process once two trials reported, then `--resume` it.

    While the search runs, every socket that its Ray processes listen on must be on 127.0.0.1
    (the dashboard included)."""
    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=4, max_epochs=3)
    storage = tmp_path / "trials"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "sentune.cli", "search"]
    common = ["--storage", str(storage), "--precision", "fp32"]
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        [*command, str(space_file), *common, "--dashboard-port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    listeners: set = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            listeners |= _ray_listeners(driver.pid)
            started = list(storage.glob("*/"))
            if started and len(_trial_results(started[0])) >= 2:
                break
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        listeners |= _ray_listeners(driver.pid)
        ray_tree = [driver.pid] + [c.pid for c in _children(driver.pid)]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        _wait_gone(ray_tree)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        log.close()

    assert listeners, "no listening sockets seen during the search"
    exposed = {entry for entry in listeners if not _is_loopback(entry[0])}
    assert not exposed, f"Ray listened beyond loopback: {sorted(exposed)}"

    (run_dir,) = storage.glob("*/")
    before, finished_before = _trial_results(run_dir), _finished(run_dir)
    resumed = subprocess.run(
        [*command, "--resume", str(run_dir), "--no-dashboard", "--analysis", "analysis"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _trial_results(run_dir)
    assert len(after) == 4 and _finished(run_dir) == set(after)
    for trial_id, rows in before.items():
        # Finished trials are kept as they were; the interrupted ones continued after their
        # last reported epoch (a prefix of the history stays; no epoch is repeated).
        if trial_id in finished_before:
            assert after[trial_id] == rows
        else:
            assert after[trial_id][: len(rows)] == rows
        epochs = [r[config.EPOCH] for r in after[trial_id]]
        assert epochs == sorted(set(epochs))
    table = leaderboard(open_run(run_dir))
    assert len(table) == 4 and table["error"].eq("").all()
    assert all(len(list((run_dir / t).glob("checkpoint_*"))) == 1 for t in table["trial_id"])
    # The resumed search went on writing the run's one Optuna journal: every trial is there,
    # finished, with one intermediate value per epoch it ran.
    study = _study(run_dir)
    finished = {
        t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.trials if t.state.is_finished()
    }
    assert set(finished) == set(table["trial_id"])
    for _, row in table.iterrows():
        assert sorted(finished[row["trial_id"]].intermediate_values) == list(
            range(1, int(row["epochs"]) + 1)
        )


def _study(run_dir: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalFileBackend(str(runs.optuna_journal(run_dir)))
    name = runs.read_manifest(run_dir).optuna_study
    return optuna.load_study(study_name=name, storage=JournalStorage(journal))


def _children(pid: int):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_gone(pids: list[int], timeout: float = 30) -> None:
    """Ray's processes share the driver's fate; end any straggler (by pid) after `timeout`."""
    import psutil

    deadline = time.monotonic() + timeout
    alive = [p for p in pids if psutil.pid_exists(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in alive if psutil.pid_exists(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
