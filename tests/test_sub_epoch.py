"""Sub-epoch rungs: a trial evaluates at nominal parts of an epoch (budget.evals_per_epoch), the
journal counts them in whole steps, and ASHA may stop a trial before its first epoch ends."""

from __future__ import annotations

import json

import optuna
import pytest

from sentune import analysis, config, runs, space
from sentune.config import DataConfig, TrialSettings
from sentune.data import prepare
from sentune.errors import SpaceError
from sentune.runs import open_run
from sentune.search.searcher import journal_outcome, journal_step
from sentune.train.trial import evaluation_marks, run_trial


def test_evaluation_marks_fall_on_the_batch_that_completes_each_part():
    assert evaluation_marks(8, 1) == {}
    assert evaluation_marks(8, 4) == {0.25: 2, 0.5: 4, 0.75: 6}
    assert evaluation_marks(10, 4) == {0.25: 3, 0.5: 5, 0.75: 8}
    # A very short epoch: parts that fall on the same batch keep the last, none on the end.
    assert evaluation_marks(2, 4) == {0.5: 1}


def test_the_journal_counts_evaluations_in_whole_steps():
    assert journal_step(2.0, 1) == 2
    assert journal_step(0.25, 4) == 1 and journal_step(1.75, 4) == 7
    assert journal_step(0.3333, 1) is None  # eval_every_steps between parts
    # A trial stopped at step 2 of 4 a epoch reached half an epoch of 1: pruned.
    assert journal_outcome({1: 0.5, 2: 0.6}, 2 / 4, 1)[1] == optuna.trial.TrialState.PRUNED


def test_a_grace_period_between_evaluations_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        json.dumps(
            {
                "data": {"dataset": "tweets"},
                "budget": {"evals_per_epoch": 2, "grace_period": 0.25},
                "search": {"head.dropout": {"uniform": [0.1, 0.5]}},
            }
        )
    )
    with pytest.raises(SpaceError, match="use a multiple of 0.5"):
        space.load(path)


def test_a_trial_reports_each_part_of_an_epoch(tiny_csv, tiny_model_dir, tmp_path):
    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    reports = []
    settings = TrialSettings(
        model=str(tiny_model_dir),
        max_epochs=2,
        evals_per_epoch=4,
        precision="fp32",
        checkpoint_dir=str(tmp_path / "work"),
    )
    trial_config = {"train.batch_size": 8, "train.effective_batch_size": 8, "train.max_length": 32}
    run_trial(trial_config, data, lambda m, c: reports.append(m), settings=settings)
    assert [m[config.EPOCH] for m in reports] == [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2]
    steps = [m["step"] for m in reports]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


@pytest.mark.slow
def test_asha_stops_a_trial_before_its_first_epoch_and_the_board_ranks_fairly(
    ray_session, tiny_model_dir, tiny_csv, write_tiny_space, tmp_path
):
    from sentune import search

    path = write_tiny_space(
        tmp_path,
        tiny_model_dir,
        tiny_csv,
        trials=4,
        max_epochs=1,
        evals_per_epoch=4,
        grace_period=0.25,
    )
    spec = space.load(path)
    options = search.SearchOptions(
        storage=tmp_path / "trials",
        precision="fp32",
        cache_dir=tmp_path / "cache",
        dashboard=False,
    )
    run_dir = search.run(spec, options=options)
    board = analysis.leaderboard(open_run(run_dir))
    stopped = board[board["status"] == "stopped"]
    assert len(stopped), board[["trial_id", "epochs", "status"]]
    assert (stopped["epochs"] < 1).all()
    assert set(stopped["rung"]) <= {0.25, 0.5}
    # Stopped trials rank by their score at the part of an epoch they all reached.
    assert (stopped["rank_epoch"] == stopped["epochs"].min()).all()
    assert "f1@0.25" in board.columns
    # The journal holds each part as a whole step: 1..4 for a trial that trained the epoch.
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs.optuna_journal(run_dir)))
    )
    study = optuna.load_study(study_name=run_dir.name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in complete)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) < 4 for t in pruned)
    # The analysis and the report take the parts of an epoch: importance at the lowest common
    # rung, curves with a point per evaluation.
    from sentune import report

    result = analysis.analyze(run_dir)
    assert result.rungs[0] == 0.25
    assert {0.25, 0.5} <= set(result.curves[config.EPOCH])
    assert report.write_report(result, tmp_path / "out").is_file()


def test_cpus_per_trial_auto_puts_one_trial_on_every_cpu_of_this_host(monkeypatch):
    from sentune.config import BudgetConfig
    from sentune.search import SearchOptions
    from sentune.search.resources import concurrent_trials, resolve_cpus_per_trial

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    budget = resolve_cpus_per_trial(BudgetConfig(gpus_per_trial=0.0), SearchOptions())
    assert budget.cpus_per_trial == 6.0
    assert concurrent_trials(budget, SearchOptions()) == 1
    assert (
        resolve_cpus_per_trial(
            BudgetConfig(gpus_per_trial=0.0), SearchOptions(num_cpus=4)
        ).cpus_per_trial
        == 4.0
    )
    # GPU trials and a cluster's: one CPU each, as before; a number is kept.
    assert (
        resolve_cpus_per_trial(BudgetConfig(gpus_per_trial=0.5), SearchOptions()).cpus_per_trial
        == 1.0
    )
    on_cluster = SearchOptions(address="10.0.0.1:6379")
    assert resolve_cpus_per_trial(BudgetConfig(gpus_per_trial=0.0), on_cluster).cpus_per_trial == 1
    assert (
        resolve_cpus_per_trial(
            BudgetConfig(cpus_per_trial=2.0, gpus_per_trial=0.0), SearchOptions()
        ).cpus_per_trial
        == 2.0
    )
