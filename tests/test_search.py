"""A real Ray Tune search (Optuna TPE + ASHA) on the tiny model, checked through its artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from sentune import analysis, cli, config, runs, search, space
from sentune.config import DataConfig, TrialSettings
from sentune.errors import ResourceError, SpaceError
from sentune.search import driver, preflight, strategies, tuner

pytestmark = pytest.mark.slow


def test_search_runs_every_trial_and_asha_stops_some(tiny_run):
    run = runs.open_run(tiny_run)
    table = analysis.leaderboard(run)
    assert len(table) == 6
    assert table["stopped_early"].sum() >= 1
    assert (table["status"] == analysis.COMPLETED).sum() >= 1
    assert table["error"].eq("").all()
    stopped = table[table["stopped_early"]]
    assert (stopped["epochs"] < 3).all()


def test_a_trial_in_a_reused_worker_reports_what_a_fresh_run_reports(tiny_run, tmp_path):
    """Ray reuses a finished trial's worker for the next (`reuse_actors`): nothing of the
    earlier trial (RNG, optimizer, checkpoint, accelerate state) may reach the later one, so
    its losses equal those of a direct `run_trial` of its configuration in this process."""
    from sentune.train.trial import run_trial

    folders = runs.trial_dirs(tiny_run)
    results = {
        d.name: [json.loads(line) for line in (d / runs.RESULTS_FILE).read_text().splitlines()]
        for d in folders
    }
    pids = [rows[0]["pid"] for rows in results.values()]
    assert len(set(pids)) < len(pids)  # sequential trials shared workers
    first = {}
    for d in sorted(folders, key=lambda d: results[d.name][0]["timestamp"]):
        first.setdefault(results[d.name][0]["pid"], d)
    later = next(d for d in folders if first[results[d.name][0]["pid"]] != d)
    manifest = runs.read_manifest(tiny_run)
    data = runs.load_data(manifest, cache_dir=tmp_path)
    trial_config = json.loads((later / runs.PARAMS_FILE).read_text())
    reported = results[later.name]
    fresh = []
    run_trial(
        trial_config,
        data,
        lambda metrics, _checkpoint: fresh.append(metrics),
        settings=replace(manifest.settings, checkpoint_dir=str(tmp_path / "w")),
    )
    # The full budget (the learning rate schedule depends on it); ASHA may have stopped it.
    fresh = fresh[: len(reported)]
    for key in (config.TRAIN_LOSS, config.VAL_LOSS, config.VAL_MACRO_F1):
        assert [r[key] for r in fresh] == pytest.approx([r[key] for r in reported], rel=1e-5)


def test_leaderboard_contract(tiny_run):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    for column in (
        "trial_id",
        config.VAL_MACRO_F1,
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
    assert (table.loc[full, "rank_score"] == table.loc[full, config.VAL_MACRO_F1]).all()
    assert table.loc[~full, "rank_epoch"].nunique() <= 1
    # Best-epoch scoring: each trial's score is the max over its reported epochs.
    run = runs.open_run(tiny_run)
    for _, row in table.iterrows():
        history = run.histories[row["trial_id"]]
        assert row[config.VAL_MACRO_F1] == history[config.VAL_MACRO_F1].max()
        best_epoch = history.loc[history[config.VAL_MACRO_F1].idxmax(), config.EPOCH]
        assert row["best_epoch"] == best_epoch


def test_each_trial_keeps_one_checkpoint_of_its_best_epoch(tiny_run):
    table = analysis.leaderboard(runs.open_run(tiny_run))
    for _, row in table.iterrows():
        checkpoint = Path(row["checkpoint"])
        assert (checkpoint / "model.safetensors").is_file()
        assert len(list(checkpoint.parent.glob("checkpoint_*"))) == 1
        state = json.loads((checkpoint / "trial_state.json").read_text())
        assert state["metrics"][config.VAL_MACRO_F1] == row[config.VAL_MACRO_F1]


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
    csv = pd.read_csv(tmp_path / tiny_run.name / analysis.LEADERBOARD_FILE)
    assert len(csv) == 6


def test_gpus_on_a_host_without_gpus_fail_before_anything_is_written(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, monkeypatch
):
    monkeypatch.setattr(preflight, "gpu_cards", lambda: [])  # nvidia-smi (or torch) sees none
    spec = space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, gpus_per_trial=0.5))
    with pytest.raises(ResourceError, match="no CUDA GPU"):
        search.run(spec, options=search.SearchOptions(storage=tmp_path / "trials"))
    assert not (tmp_path / "trials").exists()


def test_ray_starts_while_the_data_is_prepared_and_stops_when_that_fails(
    write_tiny_space, tiny_model_dir, tiny_csv, tmp_path
):
    """The data is prepared in a second thread while Ray starts in this one (Ray's processes
    die with the thread that started them), which then imports what the Tuner needs while the
    preparation goes on; a preparation that fails still leaves no Ray running and no run
    folder. In a fresh process: this one may hold the tests' own Ray."""
    space_file = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv)
    code = f"""
import json, sys, threading, time
from pathlib import Path
import ray
from sentune import search, space
from sentune.errors import DataError
seen = {{}}
def prepare(spec, options):
    seen["other_thread"] = threading.current_thread() is not threading.main_thread()
    # Started sequentially, Ray would start only after this returns: the wait would fail.
    for _ in range(600):
        if ray.is_initialized():
            break
        time.sleep(0.1)
    seen["ray_during_prepare"] = ray.is_initialized()
    # Imported after the preparation, Ray Tune would never appear during this wait.
    for _ in range(600):
        if all(name in sys.modules for name in search.TUNE_IMPORTS):
            break
        time.sleep(0.1)
    seen["tune_imported_during_prepare"] = all(name in sys.modules for name in search.TUNE_IMPORTS)
    raise DataError("the data is bad")
from sentune.search import driver
driver._prepare = prepare
options = search.SearchOptions(storage={str(tmp_path / "trials")!r}, dashboard=False)
try:
    search.run(space.load(Path({str(space_file)!r})), options=options)
except DataError as err:
    seen["error"] = str(err)
seen["ray_after"] = ray.is_initialized()
print(json.dumps(seen))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {
        "other_thread": True,
        "ray_during_prepare": True,
        "tune_imported_during_prepare": True,
        "error": "the data is bad",
        "ray_after": False,
    }
    assert not list((tmp_path / "trials").glob("*/*"))


def test_cli_bad_input_is_one_line_and_exit_2(capsys):
    assert cli.main(["search", "no-such-space", "--no-dashboard"]) == 2
    # Ray workers of other tests may still print to this process's stderr; keep our lines.
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sentune")]
    assert len(err) == 1
    assert err[0].startswith("sentune: error: unknown space 'no-such-space'; known spaces:")


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
    assert study.metric_names == [config.VAL_MACRO_F1]
    board = analysis.leaderboard(runs.open_run(tiny_run)).set_index("trial_id")
    by_ray_id = {t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.trials}
    assert set(by_ray_id) == set(board.index)
    for trial_id, row in board.iterrows():
        trial = by_ray_id[trial_id]
        epochs = int(row["epochs"])
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        for epoch, value in trial.intermediate_values.items():
            assert value == pytest.approx(row[analysis.epoch_score_column(epoch)])
        if row["status"] == analysis.STOPPED:
            assert trial.state == TrialState.PRUNED
            assert trial.value == pytest.approx(trial.intermediate_values[epochs])
        else:
            assert row["status"] == analysis.COMPLETED
            assert trial.state == TrialState.COMPLETE
            assert trial.value == pytest.approx(row[config.VAL_MACRO_F1])
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
    settings = strategies.sampler_settings("tpe", budget)
    assert settings["n_startup_trials"] == 3
    assert settings["multivariate"] and settings["group"] and settings["constant_liar"]
    startup = settings["n_startup_trials"]
    tpe = _proposals(strategies.build_sampler(settings), 10)
    random = _proposals(strategies.build_sampler(strategies.sampler_settings("random", budget)), 10)
    # After the startup trials, TPE proposes from its model, not what random sampling draws.
    assert tpe[startup:] != random[startup:]
    assert len(tpe) - startup >= 2 * startup  # two thirds of the budget follow the model


@pytest.mark.parametrize(
    ("trials", "startup"), [(3, 3), (6, 3), (10, 3), (12, 4), (40, 10), (1000, 10)]
)
def test_startup_trials_scale_with_the_budget(trials, startup):
    budget = config.BudgetConfig(trials=trials, concurrency=1)
    settings = strategies.sampler_settings("tpe", budget)
    assert settings["n_startup_trials"] == startup
    assert not settings["constant_liar"]  # one trial at a time: nothing to lie about


@pytest.mark.parametrize("name", config.SAMPLERS)
def test_every_named_sampler_builds_and_proposes(name):
    import optuna

    budget = config.BudgetConfig(trials=6)
    sampler = strategies.build_sampler(strategies.sampler_settings(name, budget))
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    if name != "cmaes":  # CMA-ES cannot search the choice parameters of `optim`
        assert len(_proposals(sampler, 4)) == 4


def test_a_strategy_names_its_sampler_and_cmaes_refuses_choices():
    spec = space.load("optim")
    assert strategies.strategy_name(spec, None) == "tpe-asha"
    assert strategies.strategy_name(spec, "qmc-fifo") == "qmc-fifo"
    with pytest.raises(SpaceError, match="cannot search choice parameters"):
        strategies.strategy_name(spec, "cmaes-asha")
    with pytest.raises(SpaceError, match="unknown strategy 'bayes-asha'"):
        strategies.strategy_name(spec, "bayes-asha")


def test_the_ray_searcher_leaves_inactive_parameters_out_of_the_trial_config(tmp_path):
    spec = space.load("heads")
    spec = replace(spec, budget=replace(spec.budget, trials=20))
    run_dir = tmp_path / "heads-20260101-000000"
    run_dir.mkdir()
    searcher = search.build_searcher("random", spec, run_dir)
    configs = [searcher.suggest(f"trial{i:02d}") for i in range(20)]
    assert {c["head.layers"] for c in configs} == {0, 1, 2}
    for suggested in configs:
        has_layer = suggested["head.layers"] > 0
        assert ("head.width" in suggested) == has_layer
        assert ("head.activation" in suggested) == has_layer
    assert (run_dir / runs.OPTUNA_JOURNAL).is_file()


def test_a_restored_searcher_suggests_no_trial_past_the_budget(tmp_path):
    """Tune counts suggestions in its pickled state, which after a SIGKILL may predate the last
    trial; the journal has every trial that ran, so a searcher restored from older state stops
    at the budget instead of adding a trial (a resumed S3 run once ended with 4 of 3). A trial
    suggested but never reported (Tune may have lost it) is replaced."""
    from ray.tune.search import Searcher

    spec = space.load("heads")
    spec = replace(spec, budget=replace(spec.budget, trials=2))
    epoch_1 = {config.EPOCH: 1, config.VAL_MACRO_F1: 0.5}
    run_dir = tmp_path / "heads-20260101-000000"
    run_dir.mkdir()
    first = search.build_searcher("random", spec, run_dir)
    first.suggest("a")
    first.on_trial_result("a", epoch_1)
    restored = search.build_searcher("random", spec, run_dir)  # its own state knows of "a" only
    first.suggest("b")  # suggested, never reported: lost with the driver
    assert isinstance(restored.suggest("c"), dict)
    restored.on_trial_result("c", epoch_1)
    assert restored.suggest("d") == Searcher.FINISHED


# --- latency-aware objectives ----------------------------------------------------------------


def _tell(searcher, trial_id: str, reports: list[dict]) -> None:
    searcher.suggest(trial_id)
    for result in reports[:-1]:
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, reports[-1])


def _reports(epochs: int, p95: float) -> list[dict]:
    inference = {
        config.LATENCY_P50_MS: p95 / 2,
        config.LATENCY_P95_MS: p95,
        config.THROUGHPUT_B32: 100.0,
        config.MODEL_MB: 10.0,
    }
    return [
        {config.EPOCH: e, config.VAL_MACRO_F1: 0.5 + 0.1 * e, **inference}
        for e in range(1, epochs + 1)
    ]


def test_a_latency_bound_reaches_optuna_as_a_constraint(tmp_path):
    import optuna

    spec = space.load("latency", max_latency_ms=8)
    spec = replace(spec, objective=replace(spec.objective, metrics=(config.VAL_MACRO_F1,)))
    run_dir = tmp_path / "latency-20260101-000000"
    run_dir.mkdir()
    searcher = search.build_searcher("tpe", spec, run_dir)
    max_epochs = spec.budget.max_epochs
    _tell(searcher, "fast", _reports(max_epochs, p95=5.0))
    _tell(searcher, "slow", _reports(1, p95=12.0))  # stopped by ASHA after one epoch
    study = optuna.load_study(
        study_name=run_dir.name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run_dir / runs.OPTUNA_JOURNAL))
        ),
    )
    trials = {t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.trials}
    assert trials["fast"].state == optuna.trial.TrialState.COMPLETE
    assert trials["fast"].constraints == {config.LATENCY_P95_MS: pytest.approx(-3.0)}
    assert trials["slow"].state == optuna.trial.TrialState.PRUNED
    assert trials["slow"].constraints == {config.LATENCY_P95_MS: pytest.approx(4.0)}
    assert trials["slow"].user_attrs[config.LATENCY_P95_MS] == 12.0


def test_a_pareto_space_makes_a_multi_objective_study(tmp_path):
    import optuna

    spec = space.load("latency")
    run_dir = tmp_path / "latency-20260101-000000"
    run_dir.mkdir()
    searcher = search.build_searcher("tpe", spec, run_dir)
    _tell(searcher, "full", _reports(spec.budget.max_epochs, p95=6.0))
    _tell(searcher, "stopped", _reports(1, p95=3.0))
    study = optuna.load_study(
        study_name=run_dir.name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run_dir / runs.OPTUNA_JOURNAL))
        ),
    )
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    trials = {t.user_attrs[runs.RAY_TRIAL_ID_ATTR]: t for t in study.trials}
    assert trials["full"].values == [pytest.approx(0.5 + 0.1 * spec.budget.max_epochs), 6.0]
    assert trials["stopped"].state == optuna.trial.TrialState.PRUNED
    assert trials["stopped"].user_attrs[config.LATENCY_P95_MS] == 3.0


def test_a_worker_killed_for_memory_is_said_in_one_line():
    """Ray's memory monitor ends `fit` when it kills a trial's worker as it starts (Ray 2.60:
    a RuntimeError caused by OutOfMemoryError); the search says what to lower instead."""
    from ray.exceptions import OutOfMemoryError

    report = (
        "1 worker(s) were killed due to the node running low on memory. Memory on the node "
        "(IP: 127.0.0.1, ID: 54a0) was 22.32GB used / 23.54GB limit (0.947997)\n" + "x\n" * 50
    )

    class KilledTuner:
        def fit(self):
            try:
                raise OutOfMemoryError(report)
            except OutOfMemoryError as exc:
                raise RuntimeError(f"Caught unexpected exception: {exc}") from exc

    with pytest.raises(ResourceError) as error:
        tuner.fit(KilledTuner(), search.SearchOptions())
    message = str(error.value)
    assert "\n" not in message
    assert "ran out of memory" in message and "(22.32GB used / 23.54GB limit)" in message
    assert "lower train.batch_size or train.max_length, or --concurrency" in message

    class FailingTuner:
        def fit(self):
            raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        tuner.fit(FailingTuner(), search.SearchOptions())


def test_a_search_never_takes_or_removes_a_folder_another_search_created_meanwhile(
    ray_session, write_tiny_space, tiny_model_dir, tiny_csv, tmp_path, monkeypatch
):
    """Two searches started in the same second chose one timestamp name; the one whose data
    was ready second used to fail on that folder and then remove it, the other's run."""
    spec = space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=1))
    options = search.SearchOptions(
        storage=tmp_path / "trials", precision="fp32", cache_dir=tmp_path / "cache"
    )
    chosen: list[Path] = []
    new_run_dir, prepare = runs.new_run_dir, driver._prepare

    def name_the_run(*args, **kwargs):
        chosen.append(new_run_dir(*args, **kwargs))
        return chosen[-1]

    def prepare_while_another_search_starts(spec, options):
        prepared = prepare(spec, options)
        # The other search, started in the same second, named its run alike and got there first.
        chosen[0].mkdir(parents=True)
        (chosen[0] / "other.txt").write_text("the other search's run")
        return prepared

    monkeypatch.setattr(runs, "new_run_dir", name_the_run)
    monkeypatch.setattr(driver, "_prepare", prepare_while_another_search_starts)
    run_dir = search.run(spec, options=options)
    assert (chosen[0] / "other.txt").is_file()
    assert run_dir.name == f"{chosen[0].name}-2"
    assert runs.read_manifest(run_dir).space.name == spec.name


def test_a_trials_epoch_progress_reaches_the_search_s_terminal(
    tiny_csv, tiny_model_dir, tmp_path, monkeypatch
):
    """`_trainable` (as Tune runs it in a worker) writes where its epoch stands to the run's
    progress folder; the search's progress callback reads it and says it."""
    from types import SimpleNamespace

    from ray import tune

    from sentune.data import prepare

    data = prepare(DataConfig(dataset=str(tiny_csv)), str(tiny_model_dir), cache_dir=tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    folder = tuner.make_progress_dir(run_dir)
    monkeypatch.setattr(config, "PROGRESS_WRITE_EVERY_S", 0.0)
    monkeypatch.setattr(
        tune,
        "get_context",
        lambda: SimpleNamespace(get_trial_id=lambda: "t1", get_trial_dir=lambda: "/staging/t1"),
    )
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: None)
    settings = TrialSettings(
        model=str(tiny_model_dir), max_epochs=1, precision="fp32", started_at=time.time() - 30
    )
    search._trainable(
        {"train.batch_size": 8, "train.max_length": 32},
        data=data,
        settings=settings,
        progress_dir=folder,
    )
    batches = -(-len(data.train) // 8)  # 8 per batch, rounded up
    monkeypatch.undo()  # the search's process reads with the defaults
    reporter = search.progress_callback(
        total=1, max_epochs=1, rungs=[], shown=set(), run_dir=run_dir
    )
    lines = []
    reporter.progress.write, reporter.progress.line_every_s = lines.append, 0.0
    trial = SimpleNamespace(trial_id="t1", status="RUNNING", config={})
    reporter.on_trial_start(0, [trial], trial)
    reporter.on_step_begin(0, [trial])
    # The last record, at the epoch's last step: counted (not said: the evaluation is next).
    assert reporter.progress.partial == {"t1": 1.0}
    assert not [line for line in lines if f"{batches}/{batches} batches" in line]
    first_step = [line for line in lines if line.startswith("first training step")]
    assert len(first_step) == 1 and float(first_step[0].split()[3].rstrip("s")) >= 30
