"""The refit: a search on a sample of the training split, then its winner retrained on all of it
before the export (`sentune refit`, `sentune export`), continued after a SIGKILL, refused on
changed data; the floor beside the shipped model trained on the same examples. And the winner
as a file: `best.yaml` trains its configuration again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from sentune import analysis, cli, config, export, runs, search, space

pytestmark = pytest.mark.slow

TRAIN_SIZE = 120


@pytest.fixture(scope="module")
def sampled_run(ray_session, tiny_model_dir, tiny_csv, write_tiny_space, tmp_path_factory):
    """A finished 2-trial search that trained on `TRAIN_SIZE` of the tiny training split."""
    folder = tmp_path_factory.mktemp("refit")
    path = write_tiny_space(folder, tiny_model_dir, tiny_csv, trials=2, max_epochs=2)
    text = json.loads(path.read_text())
    text["data"]["train_size"] = TRAIN_SIZE
    path.write_text(json.dumps(text))
    options = search.SearchOptions(
        storage=folder / "trials", precision="fp32", cache_dir=folder / "cache", dashboard=False
    )
    return search.run(space.load(path), options=options)


def _cli(*args: str) -> int:
    return cli.main([*args])


def test_export_refits_the_winner_on_the_whole_training_split(sampled_run, tmp_path, capsys):
    cache = str(sampled_run.parent.parent / "cache")
    out = tmp_path / "export"
    rc = _cli("export", str(sampled_run), "--out", str(out), "--formats", "hf,onnx",
              "--cache-dir", cache)  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    metrics = json.loads((out / export.METRICS_FILE).read_text())
    full = metrics["train_size"]
    assert full > TRAIN_SIZE and metrics["search_train_size"] == TRAIN_SIZE
    # The floor is trained on the same examples as the shipped model.
    assert metrics["floor"]["train_size"] == full
    refit = metrics["refit"]
    assert refit["train_size"] == full and refit["search_train_size"] == TRAIN_SIZE
    assert refit["seed"] == runs.trial_seed(runs.open_run(sampled_run).params[refit["trial_id"]])
    assert set(refit["val_macro_f1_by_epoch"]) == {"1", "2"}
    # The exported weights are the refit's best checkpoint.
    done = runs.finished_refit(sampled_run, refit["trial_id"])
    assert done is not None and done.checkpoint.parent.parent.name.startswith(runs.REFIT_PREFIX)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["checkpoint"] == done.checkpoint.relative_to(sampled_run).as_posix()
    # The first line of the summary compares the model with that floor.
    first = printed.strip().splitlines()[0]
    assert "TF-IDF floor" in first and f"same {full} examples" in first, first
    assert f"Trained on all {full} training examples" in printed
    # Once refit, an export again reuses the refit (no training); --no-refit ships the search's.
    again = tmp_path / "again"
    mtime = (done.checkpoint / runs.MODEL_CONFIG_FILE).stat().st_mtime
    assert _cli("export", str(sampled_run), "--out", str(again), "--formats", "hf",
                "--cache-dir", cache) == 0  # fmt: skip
    assert (done.checkpoint / runs.MODEL_CONFIG_FILE).stat().st_mtime == mtime
    plain = tmp_path / "plain"
    assert _cli("export", str(sampled_run), "--out", str(plain), "--formats", "hf",
                "--no-refit", "--cache-dir", cache) == 0  # fmt: skip
    metrics = json.loads((plain / export.METRICS_FILE).read_text())
    assert metrics["refit"] is None and metrics["train_size"] == TRAIN_SIZE
    assert metrics["floor"]["train_size"] == TRAIN_SIZE


# The refit in its own process; the trial's hook SIGKILLs that process once the first epoch's
# result is stored (the driver stores it; the hook runs in the trial's worker).
DRIVER = """
import os, signal, sys, time
from pathlib import Path
from sentune import runs, search

run_dir, trial, cache = sys.argv[1:4]
DRIVER_PID = os.getpid()
RESULTS = runs.refit_dir(run_dir, trial) / trial / runs.RESULTS_FILE

def kill_driver(metrics, resumed):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (RESULTS.is_file() and RESULTS.stat().st_size):
        time.sleep(0.1)
    os.kill(DRIVER_PID, signal.SIGKILL)

options = search.SearchOptions(cache_dir=Path(cache), dashboard=False, trial_hook=kill_driver)
search.refit(Path(run_dir), trial, options=options)
"""


def test_a_killed_refit_continues_and_the_export_completes(sampled_run, tmp_path):
    run_dir = tmp_path / sampled_run.name
    shutil.copytree(sampled_run, run_dir, ignore=shutil.ignore_patterns(f"{runs.REFIT_PREFIX}*"))
    cache = str(sampled_run.parent.parent / "cache")
    trial = export.select_winner(runs.open_run(run_dir)).trial_id
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(run_dir), trial, cache],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = driver.communicate(timeout=300)[0].decode()
    assert driver.returncode == -signal.SIGKILL, output[-2000:]
    _end_ray_processes(driver.pid)
    folder = runs.refit_dir(run_dir, trial)
    assert runs.finished_refit(run_dir, trial) is None  # killed after one evaluation
    history = runs.open_trials(folder, runs.read_manifest(run_dir)).histories[trial]
    assert list(history[config.EPOCH]) == [1]

    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "sentune.cli", "export", str(run_dir), "--out", str(out),
         "--formats", "hf", "--cache-dir", cache],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    refit = runs.finished_refit(run_dir, trial)
    assert refit is not None
    history = runs.open_trials(folder, runs.read_manifest(run_dir)).histories[trial]
    assert list(history[config.EPOCH]) == [1, 2]  # continued, not trained again
    assert json.loads((out / export.METRICS_FILE).read_text())["refit"]["trial_id"] == trial
    # No stray files: the export's temporary folder is gone, the refit keeps one checkpoint.
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".export")]
    assert len(runs.checkpoints(folder / trial)) == 1
    assert not (refit.checkpoint / runs.TRAINING_STATE_FILE).exists()


def _end_ray_processes(pid: int) -> None:
    """The killed driver's local Ray (its session group) is left running; end it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _with_changed_data(run_dir: Path, tmp_path: Path) -> None:
    """Point the run's manifest at a copy of its CSV with one text changed."""
    manifest = runs.read_manifest(run_dir)
    changed = tmp_path / "changed.csv"
    frame = pd.read_csv(manifest.data.config.dataset)
    frame.loc[0, "text"] = "a brand new text that was never there before"
    frame.to_csv(changed, index=False)
    raw = json.loads((run_dir / runs.MANIFEST).read_text())
    raw["data"]["config"]["dataset"] = str(changed)
    (run_dir / runs.MANIFEST).write_text(json.dumps(raw))


def test_refit_of_a_run_whose_data_changed_is_one_line(sampled_run, tmp_path, capsys):
    run_dir = tmp_path / "fresh" / sampled_run.name
    shutil.copytree(sampled_run, run_dir, ignore=shutil.ignore_patterns(f"{runs.REFIT_PREFIX}*"))
    _with_changed_data(run_dir, tmp_path)
    rc = _cli("refit", str(run_dir), "--cache-dir", str(tmp_path / "cache"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data changed" in err[0], err
    assert not any(p.name.startswith(runs.REFIT_PREFIX) for p in run_dir.iterdir())


def test_export_of_a_refit_whose_data_changed_is_one_line(sampled_run, tmp_path, capsys):
    run_dir = tmp_path / "refit" / sampled_run.name
    shutil.copytree(sampled_run, run_dir)
    assert any(p.name.startswith(runs.REFIT_PREFIX) for p in run_dir.iterdir())
    _with_changed_data(run_dir, tmp_path)
    out = tmp_path / "export"
    rc = _cli("export", str(run_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "data changed" in err[0], err
    assert not out.exists() and not list(out.parent.glob(".export*"))


def test_best_yaml_trains_the_winners_configuration_again(sampled_run, tmp_path):
    run = runs.open_run(sampled_run)
    table = analysis.leaderboard(run)
    result = analysis.analyze(sampled_run, cache_dir=tmp_path / "cache", seeds=1, bootstraps=2)
    written = analysis.write_tables(result, tmp_path / "analysis")
    winner = analysis.winner_id(table, None)
    assert winner == table.dropna(subset=["val_macro_f1"]).iloc[0]["trial_id"]
    chosen = analysis.searched_values(run, winner)
    assert set(chosen) == set(run.manifest.space.searched)
    line = analysis.winner_line(run, table, None)
    assert all(f"{key} = " in line for key in chosen), line

    spec = space.load(written["best"])
    assert not spec.params and spec.budget.trials == 1
    assert spec.model == run.manifest.model
    assert spec.data.dataset == run.manifest.data.config.dataset
    for key, value in run.params[winner].items():
        if "." in key:
            assert spec.fixed[key] == value, key

    options = search.SearchOptions(
        storage=tmp_path / "trials", precision="fp32", cache_dir=tmp_path / "cache",
        dashboard=False,
    )  # fmt: skip
    again = space.load(written["best"], overrides={"budget.max_epochs": 1})
    rerun = runs.open_run(search.run(again, options=options))
    (params,) = rerun.params.values()
    assert {k: params[k] for k in chosen} == chosen
