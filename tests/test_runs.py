"""The run folder: finished runs, the latest finished run, runs by name, the CPU's name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from sentune import cli, config, machine, runs
from sentune.cli import results
from sentune.errors import RunError
from sentune.search.recovery import settle_unknown_trials


def _run(storage: Path, name: str, *, statuses=("completed",), trials=None, mtime=None, **budget):
    """A run folder with a manifest and one trial folder per status (None: no status file)."""
    run = storage / name
    run.mkdir(parents=True)
    budget.setdefault("trials", len(statuses) if trials is None else trials)
    manifest = runs.Manifest(
        run=name,
        started="2026-01-01T00:00:00",
        space=runs.SpaceRecord(name="tiny", path="tiny.yaml", text=""),
        model="tiny",
        model_path="tiny",
        data=runs.DataRecord(config=config.DataConfig(), fingerprint="0", label_names=["a", "b"]),
        budget=config.BudgetConfig(**budget),
        settings=config.TrialSettings(resumable=True),
    )
    runs.write_manifest(run, manifest)
    for i, status in enumerate(statuses):
        trial = run / f"trial_{i}"
        trial.mkdir()
        (trial / runs.PARAMS_FILE).write_text("{}")
        if status is not None:
            runs.write_trial_status(trial, status, failures=0)
    if mtime is not None:
        os.utime(run / runs.MANIFEST, (mtime, mtime))
    return run


def test_finished_means_every_trial_ended_and_the_budget_ran(tmp_path):
    assert runs.is_finished(_run(tmp_path, "done", statuses=("completed", "error")))
    # A trial still running (no status yet), or being retried, is not the end of the search.
    assert not runs.is_finished(_run(tmp_path, "running", statuses=("completed", None)))
    assert not runs.is_finished(_run(tmp_path, "retrying", statuses=("completed", "retrying")))
    # Interrupted between trials: two of four ran.
    assert not runs.is_finished(_run(tmp_path, "cut", statuses=("completed",) * 2, trials=4))
    # A time budget may end a search before its trial count.
    assert runs.is_finished(
        _run(tmp_path, "timed", statuses=("completed",) * 2, trials=4, time_budget_s=60)
    )
    assert not runs.is_finished(_run(tmp_path, "empty", statuses=()))
    assert not runs.is_finished(tmp_path / "not-a-run")


def test_latest_finished_run_skips_a_newer_search_still_running(tmp_path):
    old = _run(tmp_path, "heads-old", mtime=1_000)
    _run(tmp_path, "tweets-now", statuses=("completed", None), mtime=2_000)
    assert runs.latest_run(tmp_path).name == "tweets-now"
    assert runs.latest_run(tmp_path, finished=True) == old
    assert runs.resolve_run(None, tmp_path) == (old, True)


def test_no_finished_run_is_a_clear_error(tmp_path):
    _run(tmp_path, "running", statuses=(None,))
    with pytest.raises(RunError, match=r"no finished run in .* \(1 unfinished\)"):
        runs.latest_run(tmp_path, finished=True)
    with pytest.raises(RunError, match="no runs in"):
        runs.resolve_run(None, tmp_path / "nothing")


def test_a_run_is_found_by_bare_name_or_by_path(tmp_path, monkeypatch):
    storage = tmp_path / "trials"
    run = _run(storage, "heads-20261127-063258")
    assert runs.resolve_run("heads-20261127-063258", storage) == (run, False)
    assert runs.resolve_run(str(run), storage) == (run, False)
    monkeypatch.chdir(tmp_path)
    assert runs.resolve_run("trials/heads-20261127-063258", "elsewhere")[0].resolve() == run
    with pytest.raises(RunError, match="no run 'heads-nope'.*heads-20261127-063258"):
        runs.resolve_run("heads-nope", storage)


def test_new_run_dir_names_and_refusals(tmp_path):
    assert runs.new_run_dir(tmp_path, "heads", name="mine") == tmp_path / "mine"
    assert re.fullmatch(r"heads-\d{8}-\d{6}", runs.new_run_dir(tmp_path, "heads").name)
    for bad in ("../escape", "a/b", "", ".hidden", "two words", "x" * 101, "-flag"):
        with pytest.raises(RunError, match="not a safe folder name"):
            runs.new_run_dir(tmp_path, "heads", name=bad)
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunError, match="already exists"):
        runs.new_run_dir(tmp_path, "heads", name="taken")


def test_cli_says_which_run_it_picked(tmp_path, monkeypatch, capsys):
    storage = tmp_path / "trials"
    old = _run(storage, "heads-old", mtime=1_000)
    _run(storage, "tweets-now", statuses=(None,), mtime=2_000)
    shown = []
    monkeypatch.setattr(
        results, "show_leaderboard", lambda run_dir, analysis: shown.append(run_dir)
    )
    assert cli.main(["leaderboard", "--storage", str(storage)]) == 0
    assert shown == [old]
    assert f"using {old} (latest finished run)" in capsys.readouterr().err
    assert cli.main(["leaderboard", "tweets-now", "--storage", str(storage)]) == 0
    assert shown[-1] == storage / "tweets-now"
    assert "latest finished" not in capsys.readouterr().err


def test_cpu_name_is_the_model_name(monkeypatch):
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if lines:
            assert runs.cpu_name() == lines[0].split(":", 1)[1].strip()
    monkeypatch.setattr(machine.platform, "processor", lambda: "Fallback CPU")
    real = Path.read_text
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda self, *a, **k: (_ for _ in ()).throw(OSError()) if self == cpuinfo else real(self),
    )
    assert runs.cpu_name() == "Fallback CPU"
    assert runs.device_description()["cpu"] == "Fallback CPU"


@pytest.mark.slow
def test_a_real_search_is_finished_and_can_be_named(
    ray_session, tiny_run, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, capsys
):
    assert runs.is_finished(tiny_run)  # ASHA-stopped trials count as completed
    space = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=1)
    storage = tmp_path / "trials"
    argv = ["search", str(space), "--storage", str(storage), "--no-dashboard", "--name", "mine"]
    argv += ["--analysis", str(tmp_path / "analysis"), "--precision", "fp32"]
    assert cli.main(argv) == 0
    assert runs.read_manifest(storage / "mine").run == "mine"
    assert runs.is_finished(storage / "mine")
    assert json.loads((storage / "mine" / runs.MANIFEST).read_text())["run"] == "mine"
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_resume_takes_a_bare_run_name(tmp_path, capsys):
    storage = tmp_path / "trials"
    run = _run(storage, "heads-cut", statuses=("completed", None))
    argv = ["search", "--resume", "heads-cut", "--storage", str(storage), "--max-epochs", "9"]
    assert cli.main(argv) == 2  # found by name, then refused for its override
    assert f"--resume continues {run} as it was started" in capsys.readouterr().err


def test_a_timestamp_name_taken_by_another_search_moves_to_a_suffix(tmp_path, monkeypatch):
    """Two searches of one space started in the same second get one timestamp name."""

    class Frozen(runs.folder.dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5)

    monkeypatch.setattr(runs.folder.dt, "datetime", Frozen)
    first = runs.new_run_dir(tmp_path, "heads")
    assert first.name == "heads-20260102-030405"
    # Named by both before either folder existed (each prepares its data first).
    second = runs.new_run_dir(tmp_path, "heads")
    assert runs.create_run_dir(first, named=False) == first
    (first / "sentune.json").write_text("{}")  # the other search's run
    created = runs.create_run_dir(second, named=False)
    assert created.name == "heads-20260102-030405-2" and created.is_dir()
    assert (first / "sentune.json").is_file()
    assert runs.new_run_dir(tmp_path, "heads").name == "heads-20260102-030405-3"
    # A chosen name taken meanwhile is an error, not another folder.
    named = tmp_path / "mine"
    named.mkdir()
    with pytest.raises(RunError, match="another search created .* meanwhile"):
        runs.create_run_dir(named, named=True)


def test_what_a_killed_search_left_unknown_to_tune_is_settled(tmp_path, monkeypatch):
    """A worker uploads its checkpoint before the search's process records the trial, and Tune
    saves its state apart from the trials' results; killed in between, the folder holds a
    checkpoint that no experiment knows (deleted), or a trial with results that the resumed one
    never held (recorded as lost, its training state dropped). Nothing else is touched."""
    from types import SimpleNamespace

    from sentune.runs import storage

    def trial(name, *, results="{}\n"):
        folder = tmp_path / name
        (folder / "checkpoint_000000").mkdir(parents=True)
        (folder / "checkpoint_000000" / runs.TRAINING_STATE_FILE).write_bytes(b"state")
        if results is not None:
            (folder / runs.RESULTS_FILE).write_text(results)
        return folder

    trial("known", results=None)  # a trial of the experiment: kept, results or not
    trial("reported", results='{"epoch": 1}\n')  # unknown, but it has results: kept
    orphan = trial("orphan", results=None)
    trial("empty", results="")
    lost = trial("lost", results='{"epoch": 1}\n')  # a trial (params) Tune's state never held
    (lost / runs.PARAMS_FILE).write_text("{}")
    (lost / "checkpoint_000000" / runs.MODEL_CONFIG_FILE).write_text("{}")
    (tmp_path / runs.PROGRESS_DIR).mkdir()  # no checkpoints: not a trial
    assert [d.name for d in runs.orphan_trial_dirs(tmp_path, {"known"})] == ["empty", "orphan"]
    assert runs.orphan_trial_dirs(tmp_path, {"known", "empty", "orphan"}) == []
    assert runs.orphan_trial_dirs(tmp_path / "missing", set()) == []

    deleted = []
    monkeypatch.setattr(storage, "delete", lambda store, name, paths: deleted.extend(paths))
    grid = [SimpleNamespace(path="bucket/runs/run/known")]
    store = storage.open_storage(str(tmp_path.parent), cache_dir=tmp_path)
    settle_unknown_trials(tmp_path, tmp_path, grid, store)
    assert sorted(p.name for p in deleted) == ["empty", "orphan", runs.TRAINING_STATE_FILE]
    assert runs.read_trial_status(lost) == {
        "status": runs.ERROR, "failures": 0, "error": runs.LOST_ERROR
    }  # fmt: skip
    assert runs.checkpoints(lost) and not list(lost.rglob(runs.TRAINING_STATE_FILE))
    assert [d.name for d in runs.lost_trial_dirs(tmp_path, {"known"})] == []  # said once
    assert (
        not orphan.exists() and (tmp_path / "known").is_dir() and (tmp_path / "reported").is_dir()
    )
