"""Start points: the recipe (config.py's defaults of the searched keys) and a space's `start:`
list are the study's first trials, labelled in the journal and the progress lines."""

from __future__ import annotations

import json

import optuna
import pytest

from sentune import runs, space
from sentune.search.searcher import build_searcher
from sentune.space import Param, StartPoint, start_points
from sentune.space.start import recipe

HEADS = {
    "head.pooling": Param("choice", ("cls", "mean")),
    "head.layers": Param("choice", (0, 1, 2)),
    "head.width": Param("choice", (128, 384), (("head.layers", (1, 2)),)),
    "head.dropout": Param("uniform", (0.1, 0.5)),
    "train.learning_rate": Param("loguniform", (1e-3, 1e-2)),
}


def test_the_recipe_takes_the_defaults_that_the_space_can_take():
    # pooling cls, layers 0 and dropout 0.3 are config.py's; width is inactive at layers 0 and
    # its default (None) is no value; the default learning rate lies outside the range.
    assert recipe(HEADS) == {"head.pooling": "cls", "head.layers": 0, "head.dropout": 0.3}


def test_the_recipe_takes_the_models_own_values_where_config_has_them(monkeypatch):
    from sentune import config

    searched = {"train.learning_rate": Param("loguniform", (2e-5, 3e-4))}
    assert recipe(searched, "minilm") == {"train.learning_rate": 2e-4}  # MiniLM's own
    assert recipe(searched, "bert-base-uncased") == {"train.learning_rate": 5e-5}  # the guide's
    monkeypatch.setitem(config.MODEL_RECIPES, "tiny", {"head.dropout": 0.2})
    assert recipe(HEADS, "tiny")["head.dropout"] == 0.2


def test_a_key_the_space_leaves_unset_takes_the_models_recipe(tmp_path):
    spec = _spec(tmp_path)  # minilm; the learning rate neither searched nor fixed
    assert spec.fixed["train.learning_rate"] == 2e-4
    fixed = space.load(spec.path, overrides={"train.learning_rate": 3e-5})
    assert fixed.fixed["train.learning_rate"] == 3e-5  # the space's (or an override's) wins
    other = space.load(spec.path, overrides={"model": "bert-base-uncased"})
    assert "train.learning_rate" not in other.fixed  # config.py's default, the guide's


def test_listed_start_points_follow_the_recipe_unless_it_is_turned_off():
    listed = ({"head.layers": 1, "head.width": 384}, {"head.dropout": 0.1})
    points = start_points(HEADS, listed, from_recipe=True)
    assert [p.label for p in points] == ["recipe", "start 1", "start 2"]
    assert points[1].params == {"head.layers": 1, "head.width": 384}
    assert [p.label for p in start_points(HEADS, listed, from_recipe=False)] == [
        "start 1",
        "start 2",
    ]


@pytest.mark.parametrize(
    "point, message",
    [
        ({"head.dropout": 0.9}, "head.dropout=0.9 is outside the space"),
        ({"head.activation": "relu"}, "head.activation is not searched"),
        ({"head.layers": 0, "head.width": 128}, "head.width is only searched when head.layers"),
        ({"head.layers": 1.5}, "head.layers=1.5 is outside the space"),
    ],
)
def test_a_start_point_the_space_cannot_take_is_refused(point, message):
    with pytest.raises(ValueError, match="start point 1: " + message):
        start_points(HEADS, (point,), from_recipe=False)


def _spec(tmp_path, **top):
    text = {
        "model": "minilm",
        "data": {"dataset": "tweets"},
        "budget": {"trials": 4, **top.pop("budget", {})},
        "search": {
            "head.layers": {"choice": [0, 1, 2]},
            "head.width": {"choice": [128, 384], "when": {"head.layers": [1, 2]}},
            "head.dropout": {"uniform": [0.1, 0.5]},
        },
        **top,
    }
    path = tmp_path / "space.yaml"
    path.write_text(json.dumps(text))
    return space.load(path)


def test_an_override_that_fixes_a_key_wins_over_the_start_points(tmp_path):
    spec = _spec(tmp_path, start=[{"head.dropout": 0.2}, {"head.dropout": 0.4, "head.layers": 1}])
    fixed = space.load(spec.path, overrides={"head.dropout": 0.25})
    assert fixed.starts == ({"head.layers": 1},)


def test_the_study_hands_out_the_start_points_first_and_labels_them(tmp_path):
    spec = _spec(tmp_path, start=[{"head.layers": 2, "head.width": 128}])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    searcher = build_searcher("tpe", spec, run_dir)
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first == {"head.layers": 0, "head.dropout": 0.3}
    assert second["head.layers"] == 2 and second["head.width"] == 128
    assert 0.1 <= second["head.dropout"] <= 0.5  # left to the sampler
    assert third  # sampled
    study = optuna.load_study(study_name=run_dir.name, storage=searcher._ot_study._storage)
    labels = [t.user_attrs.get(runs.START_POINT_ATTR) for t in study.trials]
    assert labels == ["recipe", "start 1", None]

    # A resumed (or grown) study is built again on the same journal: nothing is queued twice.
    again = build_searcher("tpe", spec, run_dir)
    assert not again._ot_study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_no_recipe_when_turned_off(tmp_path):
    spec = _spec(tmp_path, budget={"start_from_recipe": False})
    assert spec.start_points() == []
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    build_searcher("tpe", spec, run_dir)
    assert not optuna.load_study(
        study_name="run",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(runs.optuna_journal(run_dir)))
        ),
    ).trials


def test_a_trial_is_a_start_point_by_all_its_values():
    point = StartPoint("recipe", {"head.dropout": 0.3})
    assert point.matches({"head.dropout": 0.3, "train.learning_rate": 1e-3})
    assert not point.matches({"head.dropout": 0.31})


@pytest.mark.slow
def test_the_recipe_is_the_first_trial_of_a_search_and_in_its_journal(tiny_run):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(runs.optuna_journal(tiny_run)))
    )
    study = optuna.load_study(study_name=tiny_run.name, storage=storage)
    first = study.trials[0]
    assert first.user_attrs[runs.START_POINT_ATTR] == "recipe"
    # The tiny space searches dropout in [0, 0.3] (config.py's 0.3 is in it) and learning
    # rates that config.py's default is not one of (drawn).
    assert first.params["head.dropout"] == 0.3
    trial_dir = tiny_run / first.user_attrs[runs.RAY_TRIAL_ID_ATTR]
    params = json.loads((trial_dir / runs.PARAMS_FILE).read_text())
    assert params["head.dropout"] == 0.3
    assert [t.user_attrs.get(runs.START_POINT_ATTR) for t in study.trials[1:]] == [None] * (
        len(study.trials) - 1
    )
