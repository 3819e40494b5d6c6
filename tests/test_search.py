"""A real Ray Tune search (Optuna TPE + ASHA) on the tiny model, checked through its artifacts."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_reviews

from sentune import analysis, cli, config, runs, search, space
from sentune.errors import ResourceError

pytestmark = pytest.mark.slow


def test_search_runs_every_trial_and_asha_stops_some(tiny_run):
    run = runs.open_run(tiny_run)
    table = analysis.leaderboard(run)
    assert len(table) == 6
    assert table["stopped_early"].sum() >= 1
    assert (table["status"] == "completed").sum() >= 1
    assert table["error"].eq("").all()
    stopped = table[table["stopped_early"]]
    assert (stopped["epochs"] < 3).all()


def test_leaderboard_contract(tiny_run):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    for column in (
        "trial_id",
        config.OBJECTIVE,
        "best_epoch",
        "epochs",
        "stopped_early",
        "train_s",
        "train.learning_rate",
        "head.dropout",
    ):
        assert column in table.columns
    # Equal fidelity: the full-budget trials first by best epoch, then the rest at a common epoch.
    full = table["epochs"] == 3
    assert full.tolist() == sorted(full.tolist(), reverse=True)
    for group in (table[full], table[~full]):
        ranked = group["rank_score"].tolist()
        assert ranked == sorted(ranked, reverse=True)
    assert (table.loc[full, "rank_score"] == table.loc[full, config.OBJECTIVE]).all()
    assert table.loc[~full, "rank_epoch"].nunique() <= 1
    # Best-epoch scoring: each trial's score is the max over its reported epochs.
    run = runs.open_run(tiny_run)
    for _, row in table.iterrows():
        history = run.histories[row["trial_id"]]
        assert row[config.OBJECTIVE] == history[config.OBJECTIVE].max()
        best_epoch = history.loc[history[config.OBJECTIVE].idxmax(), config.EPOCH]
        assert row["best_epoch"] == best_epoch


def test_each_trial_keeps_one_checkpoint_of_its_best_epoch(tiny_run):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    for _, row in table.iterrows():
        checkpoint = Path(row["checkpoint"])
        assert (checkpoint / "model.safetensors").is_file()
        assert len(list(checkpoint.parent.glob("checkpoint_*"))) == 1
        state = json.loads((checkpoint / "trial_state.json").read_text())
        assert state["metrics"][config.OBJECTIVE] == row[config.OBJECTIVE]


def test_manifest_records_the_run(tiny_run):
    manifest = json.loads((tiny_run / runs.MANIFEST).read_text())
    assert manifest["space"]["searched"] == ["head.dropout", "train.learning_rate"]
    assert manifest["data"]["fingerprint"]
    assert manifest["versions"]["ray"] and manifest["versions"]["torch"]
    assert manifest["budget"]["trials"] == 6
    assert "device" in manifest and "host" in manifest
    typed = runs.read_manifest(tiny_run)
    assert typed.space.searched == manifest["space"]["searched"]
    assert typed.budget.trials == 6 and typed.seed == manifest["seed"]
    assert typed.data.config.dataset == manifest["data"]["config"]["dataset"]
    assert runs.Manifest.from_dict(typed.to_dict()) == typed


def test_trials_report_when_training_began_and_auto_gpus_resolve_to_none_here(tiny_run):
    typed = runs.read_manifest(tiny_run)
    # `budget.gpus_per_trial: auto` (the default) on a host without a GPU, recorded as 0.
    assert typed.budget.gpus_per_trial == 0.0 and typed.settings.started_at
    run = runs.open_run(tiny_run)
    for history in run.histories.values():
        first = history[config.FIRST_STEP_S]
        assert (first > 0).all() and first.nunique() == 1  # one moment per trial
        assert (history[config.TRIAL_SETUP_S] <= first).all()


def test_cli_leaderboard_writes_csv(tiny_run, tmp_path, capsys):
    assert cli.main(["leaderboard", str(tiny_run), "--analysis", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stopped early by ASHA" in out
    csv = pd.read_csv(tmp_path / tiny_run.name / "leaderboard.csv")
    assert len(csv) == 6


def test_gpus_on_a_host_without_gpus_fail_before_anything_is_written(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, gpus_per_trial=0.5))
    with pytest.raises(ResourceError, match="no CUDA GPU"):
        search.run(spec, options=search.SearchOptions(storage=tmp_path / "trials"))
    assert not (tmp_path / "trials").exists()


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    assert cli.main(["search", "no-such-space", "--no-dashboard"]) == 2
    # Ray workers of other tests may still print to this process's stderr; keep our lines.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sentune")]
    assert len(err) == 1
    assert err[0].startswith("sentune: error: unknown space 'no-such-space'; known spaces:")


def test_the_terminal_shows_trial_events_and_an_estimate_not_tune_tables(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """A whole `sentune search` as a user runs it: a line per trial event with progress and an
    estimate, the leaderboard and the summary; Tune's tables and warnings only with -v."""
    import subprocess
    import sys

    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=4, max_epochs=2)
    argv = [
        sys.executable, "-m", "sentune.cli", "search", str(space_file), "--no-dashboard",
        "--precision", "fp32", "--storage", str(tmp_path / "trials"),
        "--analysis", str(tmp_path / "analysis"),
    ]  # fmt: skip
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    started = [line for line in lines if " started: " in line and line.startswith("trial ")]
    assert len(started) == 4, done.stderr[-3000:]
    assert any("trials done" in line and "left]" in line for line in lines)
    assert sum("Trial status" in line for line in lines) == 0
    assert not any("snapshotting" in line for line in lines)
    assert len(lines) <= 80, "\n".join(lines)


# --- long texts: max_length from the data, caps, and the floor's verdict -------------------


@pytest.fixture(scope="module")
def long_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with room for 1024 positions (the fixture tokenizer)."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("long-bert")
    for item in tiny_model_dir.iterdir():
        if item.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(item, folder / item.name)
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.max_position_embeddings = 1024
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def long_reviews(tmp_path) -> Path:
    """A folder of 200-1000-word reviews, fewer than smoke's 600/300 examples."""
    folder = tmp_path / "reviews"
    folder.mkdir()
    make_reviews(130, seed=1).to_csv(folder / "train.csv", index=False)
    make_reviews(40, seed=2).to_csv(folder / "validation.csv", index=False)
    return folder


def test_smoke_on_long_reviews_picks_max_length_from_the_data(
    ray_session, long_model_dir, long_reviews, tmp_path, monkeypatch, caplog, capsys
):
    monkeypatch.chdir(tmp_path)  # the token cache goes here
    caplog.set_level(logging.INFO, logger="sentune")
    argv = ["search", "smoke", "--dataset", str(long_reviews), "--model", str(long_model_dir)]
    argv += ["--storage", "trials", "--analysis", "analysis", "--no-dashboard"]
    assert cli.main([*argv, "--precision", "fp32"]) == 0

    (run_dir,) = Path("trials").glob("smoke-*")
    manifest = json.loads((run_dir / runs.MANIFEST).read_text())
    chosen = manifest["max_length"]
    (value,) = chosen["values"]
    assert chosen["rule"] == "auto p95" and chosen["limit"] == 1024
    assert value % 32 == 0 and value <= 1024
    assert chosen["truncated_share"][str(value)] <= 0.1 or value == 1024  # covers >= 90 %
    assert value >= manifest["data"]["stats"]["train_token_lengths"]["p90"]
    assert manifest["space"]["fixed"]["train.max_length"] == value
    for params in run_dir.glob("*/params.json"):
        assert json.loads(params.read_text())["train.max_length"] == value
    assert f"train.max_length {value} (auto p95; the model takes 1024) truncates" in caplog.text
    # smoke's 600/300 are caps: the folder's smaller splits are used whole.
    sizes = manifest["data"]["stats"]["split_sizes"]
    assert sizes["validation"] == 40 and sizes["train"] + sizes["test"] == 130
    assert "data.train_size is 600 (a cap, from the space file)" in caplog.text
    assert "data.val_size is 300 (a cap, from the space file)" in caplog.text

    # ~100 long texts and two epochs: TF-IDF wins, and the summary starts by saying so.
    out = capsys.readouterr().out.splitlines()
    top = next(i for i, line in enumerate(out) if line.startswith("Top trials of"))
    assert out[top - 1].startswith("The TF-IDF floor (")
    assert "too little data" in out[top - 1]


def test_a_fixed_max_length_that_cuts_most_texts_is_warned_about(
    tiny_model_dir, tiny_csv, tmp_path, write_tiny_space, caplog
):
    from sentune.data import prepare

    spec = space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv))
    data = prepare(spec.data, str(tiny_model_dir), cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="sentune.search"):
        resolved, chosen = search.max_length_for_data(spec, data, str(tiny_model_dir))
    assert resolved == spec and chosen.rule == "fixed" and chosen.values == (32,)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]

    short = space.load(
        write_tiny_space(tmp_path, tiny_model_dir, tiny_csv), overrides={"train.max_length": 8}
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sentune.search"):
        search.max_length_for_data(short, data, str(tiny_model_dir))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    share = (data.train.lengths > 8).mean()
    assert share > config.TRUNCATION_WARN_SHARE
    assert warning.startswith(f"train.max_length 8 truncates {100 * share:.1f}% of the training")
    assert "train.truncation: head_tail" in warning


def test_the_optuna_study_lives_in_the_run_and_knows_what_asha_did(tiny_run):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    manifest = runs.read_manifest(tiny_run)
    journal = tiny_run / runs.OPTUNA_JOURNAL
    assert journal.is_file() and manifest.optuna_study == tiny_run.name
    study = optuna.load_study(
        study_name=manifest.optuna_study, storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    assert study.metric_names == [config.OBJECTIVE]
    board = analysis.leaderboard(runs.open_run(tiny_run)).set_index("trial_id")
    by_ray_id = {t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.trials}
    assert set(by_ray_id) == set(board.index)
    for trial_id, row in board.iterrows():
        trial = by_ray_id[trial_id]
        epochs = int(row["epochs"])
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        for epoch, value in trial.intermediate_values.items():
            assert value == pytest.approx(row[analysis.epoch_score_column(epoch)])
        if row["status"] == "stopped":
            assert trial.state == TrialState.PRUNED
            assert trial.value == pytest.approx(trial.intermediate_values[epochs])
        else:
            assert row["status"] == "completed"
            assert trial.state == TrialState.COMPLETE
            assert trial.value == pytest.approx(row[config.OBJECTIVE])
    assert any(t.state == TrialState.PRUNED for t in study.trials)


def _proposals(sampler, trials: int) -> list[dict]:
    """The configurations `sampler` proposes on a toy objective (best at dropout 0.1, lr 1e-3)."""
    import math

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    spec = space.load("optim")
    proposed = []
    for _ in range(trials):
        trial = study.ask()
        values = {key: p.suggest(trial, key) for key, p in spec.params.items()}
        lr = values["train.learning_rate"]
        study.tell(trial, -abs(math.log10(lr) + 3) - values["train.warmup_ratio"])
        proposed.append(values)
    return proposed


def test_tpe_learns_within_a_ten_trial_budget():
    budget = config.BudgetConfig(trials=10, seed=0, concurrency=2)
    settings = search.sampler_settings("tpe", budget)
    assert settings["n_startup_trials"] == 3
    assert settings["multivariate"] and settings["group"] and settings["constant_liar"]
    startup = settings["n_startup_trials"]
    tpe = _proposals(search.build_sampler(settings), 10)
    random = _proposals(search.build_sampler(search.sampler_settings("random", budget)), 10)
    # After the startup trials, TPE proposes from its model, not what random sampling draws.
    assert tpe[startup:] != random[startup:]
    assert len(tpe) - startup >= 2 * startup  # two thirds of the budget follow the model


@pytest.mark.parametrize(
    ("trials", "startup"), [(3, 3), (6, 3), (10, 3), (12, 4), (40, 10), (1000, 10)]
)
def test_startup_trials_scale_with_the_budget(trials, startup):
    budget = config.BudgetConfig(trials=trials, concurrency=1)
    settings = search.sampler_settings("tpe", budget)
    assert settings["n_startup_trials"] == startup
    assert not settings["constant_liar"]  # one trial at a time: nothing to lie about


@pytest.mark.parametrize("name", config.SAMPLERS)
def test_every_named_sampler_builds_and_proposes(name):
    import optuna

    budget = config.BudgetConfig(trials=6)
    sampler = search.build_sampler(search.sampler_settings(name, budget))
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    if name != "cmaes":  # CMA-ES cannot search the choice parameters of `optim`
        assert len(_proposals(sampler, 4)) == 4


def test_a_strategy_names_its_sampler_and_cmaes_refuses_choices():
    spec = space.load("optim")
    assert search._strategy_name(spec, None) == "tpe-asha"
    assert search._strategy_name(spec, "qmc-fifo") == "qmc-fifo"
    with pytest.raises(space.SpaceError, match="cannot search choice parameters"):
        search._strategy_name(spec, "cmaes-asha")
    with pytest.raises(space.SpaceError, match="unknown strategy 'bayes-asha'"):
        search._strategy_name(spec, "bayes-asha")


def test_the_ray_searcher_leaves_inactive_parameters_out_of_the_trial_config(tmp_path):
    spec = space.load("heads")
    run_dir = tmp_path / "heads-20260101-000000"
    run_dir.mkdir()
    searcher = search._searcher("random", spec, run_dir)
    configs = [searcher.suggest(f"trial{i:02d}") for i in range(20)]
    assert {c["head.layers"] for c in configs} == {0, 1, 2}
    for suggested in configs:
        has_layer = suggested["head.layers"] > 0
        assert ("head.width" in suggested) == has_layer
        assert ("head.activation" in suggested) == has_layer
    assert (run_dir / runs.OPTUNA_JOURNAL).is_file()


# --- confirmation over seeds -------------------------------------------------------------------


def _fail_report(counter: Path, failing: int):
    """A trial hook: the `failing`-th report of the whole run (counted in a file, trials one at
    a time) fails its trial; every other report goes on."""

    def hook(metrics, resumed):
        seen = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(seen))
        if seen == failing:
            raise RuntimeError("injected failure (confirmation)")

    return hook


def test_confirmation_retrains_the_top_configurations_and_the_best_mean_wins(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    from sentune import export, report

    spec = space.load(
        write_tiny_space(
            tmp_path, tiny_model_dir, tiny_csv,
            trials=3, max_epochs=2, confirm_top=2, confirm_seeds=2,
        )
    )  # fmt: skip
    # FIFO: the 3 search trials report 6 times, then the first confirmation trial fails after
    # its first epoch (no retries), as if the confirmation had been interrupted.
    options = search.SearchOptions(
        storage=tmp_path / "trials",
        precision="fp32",
        cache_dir=tmp_path / "cache",
        dashboard=False,
        strategy="random-fifo",
        max_failures=0,
        trial_hook=_fail_report(tmp_path / "reports", failing=7),
    )
    run_dir = search.run(spec, options=options)
    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    assert len(table) == 3  # the confirmation trials stay out of the search's leaderboard
    top = table["trial_id"].head(2).tolist()
    expected = sorted(runs.confirm_trial_name(t, 1) for t in top)
    assert sorted(run.confirmation.params) == expected
    assert sorted(run.confirmation.errors) == [runs.confirm_trial_name(top[0], 1)]

    # --resume continues the errored confirmation trial from its checkpoint.
    search.resume(run_dir, options=replace(options, trial_hook=None))
    run = runs.open_run(run_dir)
    assert not run.confirmation.errors
    retried = run.confirmation.histories[runs.confirm_trial_name(top[0], 1)]
    assert retried[config.EPOCH].tolist() == [1, 2]
    assert runs.is_finished(run_dir)

    confirmed = analysis.confirmation(run)
    rows = confirmed.table
    pairs = [[top[0], 0], [top[0], 1], [top[1], 0], [top[1], 1]]
    assert rows[["trial_id", "seed"]].values.tolist() == pairs
    # The search trials (full budget) are seed 0; the confirmation trained seed 1 only.
    assert rows["confirm_trial"].tolist() == [
        "", runs.confirm_trial_name(top[0], 1), "", runs.confirm_trial_name(top[1], 1)
    ]  # fmt: skip
    for _, seeds in rows.groupby("trial_id"):
        scores = seeds[config.OBJECTIVE]
        assert seeds["mean"].iloc[0] == pytest.approx(scores.mean())
        assert seeds["std"].iloc[0] == pytest.approx(scores.std(ddof=1))
    means = rows.groupby("trial_id")[config.OBJECTIVE].mean()
    assert confirmed.winner == means.idxmax()

    winner = export.select_winner(run)
    assert winner.trial_id == confirmed.winner
    assert set(winner.confirmed) == {0, 1}
    best_seed = rows[rows["trial_id"] == winner.trial_id][config.OBJECTIVE].max()
    assert winner.val_macro_f1 == pytest.approx(best_seed)
    assert (winner.checkpoint / "model.safetensors").is_file()

    result = analysis.analyze(run_dir, with_data=False, seeds=1, bootstraps=1)
    text = report.summary(result)
    mean, std = means[winner.trial_id], rows[rows["trial_id"] == winner.trial_id]["std"].iloc[0]
    assert f"winner (best mean over seeds): trial {winner.trial_id}" in text
    assert f"{mean:.4f} ± {std:.4f} over 2 seeds" in text
    written = analysis.write_tables(result, tmp_path / "analysis")
    assert len(pd.read_csv(written["confirm"])) == 4

    # The export's model card gives the mean ± std over the seeds.
    fast = {"latency_runs": 2, "throughput_batches": 1, "warmup": 0, "parity_texts": 8}
    options = export.ExportOptions(formats=("hf",), cache_dir=tmp_path / "cache", **fast)
    done = export.export_winner(run_dir, out_dir=tmp_path / "export", options=options)
    card = (done.path / "README.md").read_text()
    assert f"best mean validation macro-F1: {mean:.4f} ± {std:.4f} over 2 seeds (0, 1)" in card
    assert set(done.metrics["confirmed_val_macro_f1"]) == {0, 1}
