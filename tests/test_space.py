"""Search-space files: every shipped space loads; bad spaces fail with clear messages."""

from __future__ import annotations

import pytest

from sentune import config, space
from sentune.errors import SpaceError


@pytest.mark.parametrize("name", space.list_spaces())
def test_every_shipped_space_loads(name):
    spec = space.load(name)
    assert spec.name == name
    assert spec.params, f"{name} searches nothing"
    tune_space = spec.param_space()
    assert set(spec.params) <= set(tune_space)
    for key in tune_space:
        assert key in config.dotted_keys()


def test_shipped_spaces_include_the_documented_ones():
    assert {"smoke", "heads", "optim", "data", "full"} <= set(space.list_spaces())


@pytest.mark.parametrize("name", space.list_spaces())
def test_spaces_do_not_repeat_defaults(name):
    """Neither `fixed` nor the `data`/`budget` sections of a space file repeat a default."""
    raw = space.parse_yaml(space.find_space(name).read_text())
    written = dict(raw.get("fixed") or {})
    for section in ("data", "budget"):
        written.update({f"{section}.{k}": v for k, v in (raw.get(section) or {}).items()})
    assert written, f"{name} sets nothing"
    # DESIGN.md: a space file names its model and dataset, default or not.
    written.pop("data.dataset", None)
    for key, value in written.items():
        section, field = key.split(".", 1)
        default = getattr(config.SECTIONS[section](), field)
        assert value != default, f"{name}: {key} repeats the default {default!r}"


@pytest.mark.parametrize("name", space.list_spaces())
def test_optuna_and_tune_draw_from_the_same_domain(name):
    """`Param.suggest` (define-by-run) stays inside what `Param.to_tune` would draw."""
    import optuna

    spec = space.load(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        for key, param in spec.params.items():
            value = param.suggest(trial, key)
            if param.kind == "choice":
                assert value in param.args, (key, value)
            else:
                assert param.args[0] <= value <= param.args[1], (key, value)
                if param.kind in ("int", "qrandint"):
                    assert isinstance(value, int), (key, value)
        study.tell(trial, 0.0)


def test_values_and_domains(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "model: minilm\n"
        "data: {train_size: 100}\n"
        "budget: {trials: 2, max_epochs: 2}\n"
        "fixed: {train.learning_rate: 1.0e-4}\n"
        "search:\n"
        "  head.layers: {int: [0, 2]}\n"
        "  train.batch_size: {qrandint: [16, 64, 16]}\n"
        "  head.dropout: {uniform: [0.1, 0.3]}\n"
    )
    spec = space.load(path)
    assert spec.data.train_size == 100
    assert spec.budget.trials == 2
    assert spec.values("head.layers") == [0, 2]
    assert spec.values("train.learning_rate") == [1e-4]
    assert spec.values("train.max_length") == [config.TrainConfig().max_length]
    layers = spec.param_space()["head.layers"]
    assert {layers.sample() for _ in range(200)} == {0, 1, 2}  # inclusive upper bound


def test_overrides_fix_searched_keys_and_replace_budget():
    spec = space.load("heads", overrides={"budget.trials": 3, "head.dropout": 0.2, "model": "x"})
    assert spec.budget.trials == 3
    assert spec.model == "x"
    assert "head.dropout" not in spec.params
    assert spec.fixed["head.dropout"] == 0.2


BAD = {
    "malformed yaml": ("search: {head.dropout: [", "malformed YAML"),
    "empty": ("", "is empty"),
    "not a mapping": ("- a\n- b\n", "top level must be a mapping"),
    "unknown top key": ("serch: {}\n", "unknown top-level key 'serch'"),
    "unknown parameter": ("search: {head.dropuot: {uniform: [0.1, 0.2]}}", "unknown parameter"),
    "bad bounds": ("search: {head.dropout: {uniform: [0.5, 0.1]}}", "needs low < high"),
    "unknown distribution": ("search: {head.dropout: {gauss: [0, 1]}}", "unknown distribution"),
    "two distributions": (
        "search: {head.dropout: {uniform: [0.1, 0.2], choice: [1]}}",
        "exactly one distribution",
    ),
    "wrong arity": ("search: {head.dropout: {uniform: [0.1]}}", "needs [low, high]"),
    "loguniform at zero": ("search: {train.learning_rate: {loguniform: [0, 1]}}", "low > 0"),
    "float dist on int": ("search: {head.layers: {uniform: [0, 2]}}", "whole number"),
    "bad choice value": ("search: {head.pooling: {choice: [cls, max]}}", "not one of"),
    "value out of range": ("search: {head.layers: {choice: [0, 7]}}", "outside"),
    "searched data key": ("search: {data.train_size: {choice: [10, 20]}}", "fixed for a whole"),
    "fixed and searched": (
        "fixed: {head.dropout: 0.2}\nsearch: {head.dropout: {uniform: [0.1, 0.3]}}",
        "both fixed and searched",
    ),
    "grace above max epochs": ("budget: {max_epochs: 2, grace_period: 3}", "exceeds"),
    "concurrency below 1": ("budget: {concurrency: 0}", "outside"),
    "fractional gpu above 1": ("budget: {gpus_per_trial: 1.5}", "at most 1"),
    "string for number": ("budget: {trials: many}", "needs a number"),
    "unknown budget field": ("budget: {trails: 3}", "unknown parameter 'budget.trails'"),
    "unknown sampler": (
        "sampler: bayes\nsearch: {head.dropout: {uniform: [0.1, 0.3]}}",
        "unknown sampler 'bayes'; use one of tpe, random, qmc, gp, cmaes",
    ),
    "condition on an unknown key": (
        "search: {head.width: {choice: [8, 16], when: {head.layerz: [1]}}}",
        "unknown parameter 'head.layerz'",
    ),
    "condition on a fixed key": (
        "fixed: {head.layers: 1}\n"
        "search: {head.width: {choice: [8, 16], when: {head.layers: [1]}}}",
        "head.layers is not searched",
    ),
    "condition on itself": (
        "search: {head.width: {choice: [8, 16], when: {head.width: [8]}}}",
        "cannot depend on itself",
    ),
    "condition never met": (
        "search:\n  head.layers: {choice: [0, 1]}\n"
        "  head.width: {choice: [8, 16], when: {head.layers: [2]}}",
        "head.layers never takes 2",
    ),
    "condition not a mapping": (
        "search:\n  head.layers: {choice: [0, 1]}\n"
        "  head.width: {choice: [8, 16], when: [head.layers]}",
        "give a mapping of searched parameter",
    ),
    "conditions in a cycle": (
        "search:\n  head.width: {choice: [8, 16], when: {head.activation: [relu]}}\n"
        "  head.activation: {choice: [gelu, relu], when: {head.width: [8]}}",
        "conditions form a cycle (head.width -> head.activation -> head.width)",
    ),
    "cmaes on a choice": (
        "sampler: cmaes\nsearch: {head.pooling: {choice: [cls, mean]}}",
        "sampler cmaes cannot search choice parameters (head.pooling)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spaces_fail_clearly(tmp_path, case):
    text, expected = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as info:
        space.load(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_unknown_space_name_lists_known_ones():
    with pytest.raises(SpaceError, match="known spaces: .*heads"):
        space.load("nope")


def test_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "fixed: {train.learning_rate: 1e-4}\nsearch: {head.dropout: {uniform: [1e-2, 0.3]}}\n"
    )
    spec = space.load(path)
    assert spec.fixed["train.learning_rate"] == pytest.approx(1e-4)
    assert spec.params["head.dropout"].args == (0.01, 0.3)


@pytest.mark.parametrize("name", config.SAMPLERS)
def test_a_space_may_name_its_sampler(tmp_path, name):
    path = tmp_path / "s.yaml"
    path.write_text(f"sampler: {name}\nsearch: {{head.dropout: {{uniform: [0.1, 0.3]}}}}\n")
    assert space.load(path).sampler == name
    assert space.load("heads").sampler is None


def _samplers():
    import optuna

    return {
        "random": optuna.samplers.RandomSampler(seed=0),
        "tpe": optuna.samplers.TPESampler(
            seed=0, n_startup_trials=5, multivariate=True, group=True
        ),
    }


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("name", space.list_spaces())
def test_no_inactive_parameter_is_sampled(name, sampler):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = space.load(name)
    define_by_run = spec.define_by_run()
    study = optuna.create_study(direction="maximize", sampler=_samplers()[sampler])
    seen_inactive = 0
    for i in range(30):
        trial = study.ask()
        values = define_by_run.suggest(trial)
        assert values == trial.params  # nothing else was drawn into the trial
        for key, param in spec.params.items():
            active = all(values.get(parent) in allowed for parent, allowed in param.when)
            assert (key in values) == active, (key, values)
            seen_inactive += not active
        study.tell(trial, float(values.get("head.dropout", 0.0)) + i % 3)
    if name in ("heads", "full"):
        assert seen_inactive, "head.layers: 0 was never drawn in 30 trials"
        for key in ("head.width", "head.activation"):
            assert spec.params[key].when, key


def test_conditions_are_parsed_in_parent_first_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "search:\n"
        "  head.activation: {choice: [gelu, relu], when: {head.width: [16]}}\n"
        "  head.width: {choice: [8, 16], when: {head.layers: [1, 2]}}\n"
        "  head.layers: {choice: [0, 1, 2]}\n"
    )
    spec = space.load(path)
    assert spec.params["head.width"].when == (("head.layers", (1, 2)),)
    assert spec.define_by_run().order == ["head.layers", "head.width", "head.activation"]


def test_fixing_a_condition_s_parent_settles_the_condition():
    deep = space.load("heads", overrides={"head.layers": 2})
    assert deep.params["head.width"].when == () and deep.params["head.activation"].when == ()
    flat = space.load("heads", overrides={"head.layers": 0})
    assert "head.width" not in flat.params and "head.activation" not in flat.params
    assert {"head.pooling", "head.dropout"} <= set(flat.params)
