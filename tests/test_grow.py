"""Growing a finished search (`--resume RUN --trials N`, N the new total) and warm-starting a new
one from an earlier run's trials (`--warm-start RUN`): a real tiny search grown by exactly the
difference and confirmed again, a warm-started one whose study holds the earlier trials without
spending its budget, and the bad inputs, each one line and exit code 2."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sentune import analysis, cli, config, runs, search, space
from sentune.search import warmstart

# --- runs made by hand (no search) ----------------------------------------------------------------


def _fake_finished_run(folder: Path, *, trials: int = 2, unfinished: int = 0) -> Path:
    """A run folder with a manifest that names a study, a journal, and `trials` trial folders,
    the last `unfinished` of them without an outcome."""
    run = folder / "trials" / "tiny-20250101-000000"
    run.mkdir(parents=True)
    manifest = runs.Manifest(
        run=run.name,
        started="2025-01-01T00:00:00",
        space=runs.SpaceRecord(name="tiny", path="tiny.yaml", text="", searched=["head.dropout"]),
        model="tiny",
        model_path="tiny",
        data=runs.DataRecord(config=config.DataConfig(), fingerprint="0", label_names=["a", "b"]),
        budget=config.BudgetConfig(trials=trials),
        settings=config.TrialSettings(resumable=True),
        optuna_study=run.name,
    )
    runs.write_manifest(run, manifest)
    runs.optuna_journal(run).write_text("")
    for number in range(trials):
        trial = run / f"trial{number}"
        trial.mkdir()
        (trial / runs.PARAMS_FILE).write_text(json.dumps({"head.dropout": 0.1}))
        if number < trials - unfinished:
            runs.write_trial_status(trial, runs.COMPLETED, failures=0)
    return run


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("(")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("trials", [1, 2])
def test_trials_not_above_what_ran_is_one_line_exit_2(tmp_path, capsys, trials):
    run = _fake_finished_run(tmp_path)
    before = (run / runs.MANIFEST).read_text()
    assert cli.main(["search", "--resume", str(run), "--trials", str(trials)]) == 2
    line = _one_error_line(capsys)
    assert line == (
        f"sentune: error: --trials {trials}: {run.name} already ran 2 trials, and --trials with "
        "--resume is the total to grow to; pass more than 2"
    )
    assert (run / runs.MANIFEST).read_text() == before


def test_growing_an_unfinished_run_says_to_finish_it_first(tmp_path, capsys):
    run = _fake_finished_run(tmp_path, trials=3, unfinished=1)
    assert cli.main(["search", "--resume", str(run), "--trials", "5"]) == 2
    line = _one_error_line(capsys)
    assert "has unfinished trials (trial2); finish it first with " in line
    assert f"`sentune search --resume {run}`, then grow it" in line


def test_warm_start_from_a_run_that_does_not_exist_is_one_line_exit_2(
    tmp_path, capsys, write_tiny_space, tiny_model_dir, tiny_csv
):
    path = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv)
    storage = tmp_path / "trials"
    argv = ["search", str(path), "--warm-start", "nope", "--storage", str(storage)]
    assert cli.main([*argv, "--no-dashboard"]) == 2
    assert "no run 'nope'" in _one_error_line(capsys)
    assert not storage.exists() or not any(storage.iterdir())


def test_warm_start_with_resume_is_refused(tmp_path, capsys):
    run = _fake_finished_run(tmp_path)
    assert cli.main(["search", "--resume", str(run), "--warm-start", str(run)]) == 2
    assert "drop the overrides (warm-start)" in _one_error_line(capsys)


# --- an earlier trial as a point of another space (no search) ------------------------------------


def _spec(tmp_path, write_tiny_space, tiny_model_dir, tiny_csv, search_keys, **budget):
    path = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, **budget)
    text = json.loads(path.read_text())
    text["search"] = search_keys
    path.write_text(json.dumps(text))
    return space.load(path)


def _frozen(params: dict, epochs: dict[int, float], *, trial_id="a1"):
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    distributions = {
        "train.learning_rate": CategoricalDistribution([1e-5, 3e-3]),
        "head.dropout": FloatDistribution(0.0, 0.3),
    }
    return create_trial(
        state=TrialState.COMPLETE,
        value=max(epochs.values()),
        params=params,
        distributions={k: distributions[k] for k in params},
        intermediate_values=epochs,
        user_attrs={runs.RAY_TRIAL_ID_ATTR: trial_id},
    )


def _manifest(spec, searched: list[str], max_epochs: int) -> runs.Manifest:
    """An earlier run's manifest: `spec`'s model and fixed settings, `searched`, `max_epochs`."""
    return runs.Manifest(
        run="earlier",
        started="2025-01-01T00:00:00",
        space=runs.SpaceRecord(
            name="tiny", path="tiny.yaml", text="", searched=searched, fixed=dict(spec.fixed)
        ),
        model=spec.model,
        model_path="tiny",
        data=runs.DataRecord(config=config.DataConfig(), fingerprint="0", label_names=["a", "b"]),
        budget=config.BudgetConfig(max_epochs=max_epochs),
        settings=config.TrialSettings(),
    )


def test_an_earlier_trial_is_the_point_of_this_space_it_is(
    tmp_path, write_tiny_space, tiny_model_dir, tiny_csv
):
    from optuna.trial import TrialState

    spec = _spec(
        tmp_path, write_tiny_space, tiny_model_dir, tiny_csv,
        {
            "train.learning_rate": {"choice": [1e-5, 3e-3, 1e-3]},
            "head.dropout": {"uniform": [0.0, 0.2]},
            "head.pooling": {"choice": ["cls", "mean"]},
        },
        max_epochs=2,
    )  # fmt: skip
    there = _manifest(spec, ["head.dropout", "train.learning_rate"], 3)
    # Its pooling is the earlier run's (the default, cls); scored at this search's 2 epochs.
    inside = _frozen({"train.learning_rate": 3e-3, "head.dropout": 0.1}, {1: 0.5, 2: 0.6, 3: 0.7})
    point = warmstart.as_point(inside, there, spec)
    assert point.params == {"train.learning_rate": 3e-3, "head.dropout": 0.1, "head.pooling": "cls"}
    assert point.state == TrialState.COMPLETE and point.value == 0.6
    assert point.intermediate_values == {1: 0.5, 2: 0.6}
    assert runs.RAY_TRIAL_ID_ATTR not in point.user_attrs  # spends none of the budget
    assert point.user_attrs[warmstart.WARM_START_ATTR] == "earlier/a1"
    # A dropout outside this space's range is no point of it.
    outside = _frozen({"train.learning_rate": 3e-3, "head.dropout": 0.25}, {1: 0.5, 2: 0.6, 3: 0.7})
    assert warmstart.as_point(outside, there, spec) is None
    # One stopped before this search's budget stays stopped (PRUNED), with its epochs.
    stopped = _frozen({"train.learning_rate": 1e-5, "head.dropout": 0.0}, {1: 0.3})
    assert warmstart.as_point(stopped, there, spec).state == TrialState.PRUNED
    assert warmstart.differing_keys([inside], there, spec) == [
        "head.dropout (range changed)",
        "head.pooling (cls there, searched here)",
        "train.learning_rate (choices changed)",
        "budget.max_epochs (3 there, 2 here)",
    ]


def test_a_key_this_space_holds_fixed_must_have_the_trials_value(
    tmp_path, write_tiny_space, tiny_model_dir, tiny_csv
):
    spec = _spec(
        tmp_path, write_tiny_space, tiny_model_dir, tiny_csv,
        {"head.dropout": {"uniform": [0.0, 0.3]}},
        max_epochs=3,
    )  # fmt: skip
    spec = replace(spec, fixed={**spec.fixed, "train.learning_rate": 3e-3})
    there = _manifest(spec, ["head.dropout", "train.learning_rate"], 3)
    same = _frozen({"train.learning_rate": 3e-3, "head.dropout": 0.1}, {3: 0.7})
    other = _frozen({"train.learning_rate": 1e-5, "head.dropout": 0.1}, {3: 0.7})
    assert warmstart.as_point(same, there, spec).params == {"head.dropout": 0.1}
    assert warmstart.as_point(other, there, spec) is None
    assert warmstart.differing_keys([same], there, spec) == [
        "train.learning_rate (searched there, 0.003 here)"
    ]


# --- real searches ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(ray_session, tiny_model_dir, tiny_csv, write_tiny_space, tmp_path_factory):
    """A finished 2-trial, 1-epoch search whose confirmation covers every trial (2 seeds)."""
    folder = tmp_path_factory.mktemp("grow")
    path = write_tiny_space(
        folder, tiny_model_dir, tiny_csv, trials=2, max_epochs=1, confirm_top=5, confirm_seeds=2
    )
    options = search.SearchOptions(
        storage=folder / "trials", precision="fp32", cache_dir=folder / "cache", dashboard=False
    )
    return search.run(space.load(path), options=options)


def _study_trials(run_dir: Path) -> list:
    from sentune.search.recovery import load_study

    return load_study(run_dir, runs.read_manifest(run_dir)).get_trials(deepcopy=False)


@pytest.mark.slow
def test_resume_with_trials_grows_a_finished_run_by_exactly_the_difference(
    finished_run, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the token cache (.cache/sentune) goes here
    storage = tmp_path / "trials"
    run_dir = storage / finished_run.name
    shutil.copytree(finished_run, run_dir)  # the module's run stays as it was
    before = {d.name for d in runs.trial_dirs(run_dir)}
    assert len(before) == 2
    argv = ["search", "--resume", str(run_dir), "--trials", "3", "--storage", str(storage)]
    assert cli.main([*argv, "--no-dashboard", "--analysis", str(tmp_path / "analysis")]) == 0

    added = {d.name for d in runs.trial_dirs(run_dir)} - before
    assert len(added) == 1
    manifest = runs.read_manifest(run_dir)
    assert manifest.budget.trials == 3 and runs.is_finished(run_dir)
    assert [(g["from"], g["to"]) for g in manifest.grown] == [(2, 3)]
    # One study: the added trial is its third, the sampler's history the earlier two.
    ray_ids = [t.user_attrs.get(runs.RAY_TRIAL_ID_ATTR) for t in _study_trials(run_dir)]
    assert sorted(ray_ids) == sorted(before | added)
    run = runs.open_run(run_dir)
    assert sorted(analysis.leaderboard(run)["trial_id"]) == sorted(before | added)
    # The grown search's top configurations are confirmed over their seeds, the new one too.
    wanted = {
        runs.confirm_trial_name(item.trial_id, seed)
        for item in analysis.confirmation_plan(run)
        for seed in item.missing
    }
    assert any(name.startswith(tuple(added)) for name in wanted)
    assert wanted <= set(run.confirmation.params)
    assert not run.confirmation.errors


@pytest.mark.slow
def test_warm_start_seeds_the_study_and_says_which_keys_differ(
    finished_run, tmp_path, monkeypatch, caplog, write_tiny_space, tiny_model_dir, tiny_csv
):
    monkeypatch.chdir(tmp_path)
    path = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=1)
    text = json.loads(path.read_text())
    text["search"]["train.learning_rate"] = {"choice": [1e-5, 3e-3, 1e-3]}
    text["search"]["head.pooling"] = {"choice": ["cls", "mean"]}
    path.write_text(json.dumps(text))
    storage = tmp_path / "trials"
    argv = ["search", str(path), "--warm-start", str(finished_run), "--storage", str(storage)]
    with caplog.at_level(logging.INFO, logger="sentune"):
        assert cli.main([*argv, "--no-dashboard", "--analysis", str(tmp_path / "analysis")]) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warm start")]
    assert lines == [
        f"warm start from {finished_run.name}: 2 of its 2 finished trials seed the study; keys "
        "that differ: head.pooling (cls there, searched here), train.learning_rate (choices "
        "changed)"
    ]
    (run_dir,) = storage.iterdir()
    # The earlier trials are in the study, spending none of the budget of 1 trial.
    trials = _study_trials(run_dir)
    warm = [t for t in trials if warmstart.WARM_START_ATTR in t.user_attrs]
    own = [t for t in trials if runs.RAY_TRIAL_ID_ATTR in t.user_attrs]
    assert len(warm) == 2 and len(own) == 1 and len(trials) == 3
    assert all(t.params["head.pooling"] == "cls" for t in warm)
    # Only the trial that ran here has a folder and a leaderboard row.
    assert [d.name for d in runs.trial_dirs(run_dir)] == [own[0].user_attrs[runs.RAY_TRIAL_ID_ATTR]]
    assert len(analysis.leaderboard(runs.open_run(run_dir))) == 1
    record = runs.read_manifest(run_dir).warm_start
    assert record["run"] == finished_run.name and record["trials"] == 2


@pytest.mark.slow
def test_warm_start_from_a_run_on_other_data_is_one_line_exit_2(
    finished_run, tmp_path, monkeypatch, capsys, write_tiny_space, tiny_model_dir, tiny_csv
):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "earlier" / finished_run.name
    shutil.copytree(finished_run, other)
    manifest = json.loads((other / runs.MANIFEST).read_text())
    manifest["data"]["fingerprint"] = "0123456789abcdef"
    (other / runs.MANIFEST).write_text(json.dumps(manifest))
    path = write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, trials=1, max_epochs=1)
    storage = tmp_path / "trials"
    argv = ["search", str(path), "--warm-start", str(other), "--storage", str(storage)]
    assert cli.main([*argv, "--no-dashboard"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"sentune: error: --warm-start {finished_run.name}: that run ")
    assert "searched other data (fingerprint 0123456789abcdef, this search's " in line
    assert not storage.exists() or not any(storage.iterdir())
