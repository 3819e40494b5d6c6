"""Search-space files: every shipped space loads; bad spaces fail with clear messages."""

from __future__ import annotations

import numpy as np
import pytest

from sentune import config, space
from sentune.errors import SpaceError

#: Token lengths shaped like the tweets with MiniLM: p50 30, p95 40, the longest 121.
TWEET_LIKE = np.concatenate([np.full(25, 20), np.full(25, 30), np.full(45, 40), [54] * 4, [121]])


@pytest.mark.parametrize("name", space.list_spaces())
def test_every_shipped_space_loads(name):
    spec = space.load(name)
    assert spec.name == name
    assert spec.params, f"{name} searches nothing"
    spec, chosen = space.resolve_max_length(spec, TWEET_LIKE, limit=512)
    assert chosen.values and all(isinstance(v, int) for v in chosen.values)
    for key in {**spec.fixed, **spec.params}:
        assert key in config.dotted_keys()
    assert all(p.kind != "quantiles" for p in spec.params.values())


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
    """`Param.suggest` (define-by-run) stays inside the space's bounds."""
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
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {spec.params["head.layers"].suggest(study.ask(), "head.layers") for _ in range(200)}
    assert drawn == {0, 1, 2}  # inclusive upper bound


def test_overrides_fix_searched_keys_and_replace_budget():
    spec = space.load("heads", overrides={"budget.trials": 3, "head.dropout": 0.2, "model": "x"})
    assert spec.budget.trials == 3
    assert spec.model == "x"
    assert "head.dropout" not in spec.params
    assert spec.fixed["head.dropout"] == 0.2


def test_auto_covers_the_quantile_in_multiples_of_32_capped_at_the_limit():
    lengths = np.arange(1, 1001)  # p95: 950 tokens
    assert config.MAX_LENGTH_QUANTILE == 0.95
    assert space.covering_max_length(lengths, 0.95, limit=4096) == 960
    assert space.covering_max_length(lengths, 0.95, limit=512) == 512
    assert space.covering_max_length(lengths, 0.5, limit=4096) == 512  # p50 is 500
    assert space.covering_max_length(np.array([64] * 10), 1.0, limit=512) == 64
    assert space.covering_max_length(np.array([65] * 10), 1.0, limit=512) == 96
    for q in (0.3, 0.9, 0.95, 1.0):
        value = space.covering_max_length(TWEET_LIKE, q, limit=512)
        assert value % 32 == 0 and (TWEET_LIKE <= value).mean() >= q


def test_auto_and_quantiles_resolve_to_concrete_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "fixed: {train.max_length: auto}\nsearch: {head.dropout: {uniform: [0.1, 0.3]}}\n"
    )
    spec, chosen = space.resolve_max_length(space.load(path), TWEET_LIKE, limit=512)
    assert spec.fixed["train.max_length"] == 64
    assert chosen.rule == "auto p95" and chosen.values == (64,)
    assert chosen.truncated_share == {64: pytest.approx(0.01)}
    assert chosen.record()["truncated_share"] == {"64": pytest.approx(0.01)}

    path.write_text("search: {train.max_length: {quantiles: [0.25, 0.5, 0.95, 1.0]}}\n")
    spec, chosen = space.resolve_max_length(space.load(path), TWEET_LIKE, limit=100)
    assert spec.params["train.max_length"] == space.Param("choice", (32, 64, 100))
    assert chosen.rule == "quantiles [0.25, 0.5, 0.95, 1]" and chosen.values == (32, 64, 100)
    assert chosen.truncated_share[100] == pytest.approx(0.01)  # the one text over the cap

    path.write_text("search: {train.max_length: {quantiles: [0.6, 0.9]}}\n")
    spec, chosen = space.resolve_max_length(space.load(path), TWEET_LIKE, limit=512)
    assert "train.max_length" not in spec.params and spec.fixed["train.max_length"] == 64

    fixed = space.load("heads", overrides={"train.max_length": 48})
    spec, chosen = space.resolve_max_length(fixed, TWEET_LIKE, limit=512)
    assert spec == fixed and chosen.rule == "fixed" and chosen.values == (48,)


def test_sizes_in_a_space_file_are_caps_and_command_line_sizes_exact():
    spec = space.load("smoke")
    assert spec.data.capped_sizes == ("train_size", "val_size")
    spec = space.load("smoke", overrides={"data.val_size": 200})
    assert spec.data.capped_sizes == ("train_size",)
    assert spec.data.val_size == 200
    spec = space.load("full", overrides={"data.train_size": 2000})
    assert spec.data.capped_sizes == ()
    with pytest.raises(SpaceError, match="unknown parameter 'data.capped_sizes'"):
        space.load("smoke", overrides={"data.capped_sizes": ["train_size"]})


def test_auto_from_the_command_line():
    spec = space.load("heads", overrides={"train.max_length": "auto"})
    assert spec.fixed["train.max_length"] == "auto"


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
    "compile not a bool": ("fixed: {train.compile: 1}", "train.compile: needs true or false"),
    "auto gpus as a word": ("budget: {gpus_per_trial: all}", "needs a number"),
    "unknown budget field": ("budget: {trails: 3}", "unknown parameter 'budget.trails'"),
    "quantile above 1": (
        "search: {train.max_length: {quantiles: [0.5, 1.5]}}",
        "quantiles needs a non-empty list of numbers in (0, 1], got [0.5, 1.5]",
    ),
    "no quantiles": ("search: {train.max_length: {quantiles: []}}", "non-empty list"),
    "quantile zero": ("search: {train.max_length: {quantiles: [0]}}", "in (0, 1]"),
    "quantiles elsewhere": (
        "search: {head.width: {quantiles: [0.5]}}",
        "quantiles is only for train.max_length",
    ),
    "auto elsewhere": (
        "fixed: {head.width: auto}",
        "head.width: auto is only for train.max_length",
    ),
    "auto data size": ("data: {train_size: auto}", "auto is only for train.max_length"),
    "auto in a choice": (
        "search: {train.max_length: {choice: [auto, 64]}}",
        "search quantiles of the token lengths instead",
    ),
    "unknown truncation": (
        "fixed: {train.truncation: middle}",
        "'middle' is not one of head, tail, head_tail",
    ),
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
    "objective and objectives": (
        "objective: {subject_to: {latency_p95_ms: 8}}\nobjectives: [val_macro_f1, latency_p95_ms]",
        "give objective (one metric, with bounds) or objectives (a Pareto search), not both",
    ),
    "objective maximizes latency": (
        "objective: {maximize: latency_p95_ms}",
        "only val_macro_f1 can be maximised",
    ),
    "objective unknown key": ("objective: {minimize: x}", "unknown key 'minimize'"),
    "unknown bounded metric": (
        "objective: {subject_to: {latency_p99_ms: 8}}",
        "unknown metric 'latency_p99_ms'; bound one of latency_p50_ms, latency_p95_ms, model_mb",
    ),
    "negative bound": ("objective: {subject_to: {latency_p95_ms: -1}}", "needs a bound above 0"),
    "string bound": ("objective: {subject_to: {latency_p95_ms: fast}}", "needs a number"),
    "objectives without f1 first": (
        "objectives: [latency_p95_ms, val_macro_f1]",
        "the first must be val_macro_f1",
    ),
    "unknown objective metric": (
        "objectives: [val_macro_f1, val_loss]",
        "unknown metric 'val_loss'; after val_macro_f1 use latency_p50_ms",
    ),
    "one objective in the list": ("objectives: [val_macro_f1]", "two or more metrics"),
    "repeated objective": (
        "objectives: [val_macro_f1, model_mb, model_mb]",
        "repeats a metric",
    ),
    "int8 as a number": ("fixed: {serve.int8: 1}", "serve.int8: needs true or false"),
    "int8 as a range": ("search: {serve.int8: {int: [0, 1]}}", "use {choice: [false, true]}"),
    "no encoder layers": ("fixed: {model.encoder_layers: 0}", "outside [1, inf]"),
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


def test_objectives_parse_into_metrics_directions_and_bounds(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "objective: {maximize: val_macro_f1, subject_to: {latency_p95_ms: 8, model_mb: 20}}\n"
        "search: {model.encoder_layers: {int: [1, 6]}, serve.int8: {choice: [false, true]}}\n"
    )
    spec = space.load(path)
    assert spec.objective.metrics == (config.VAL_MACRO_F1,) and not spec.objective.multi
    assert spec.objective.constraints == {config.LATENCY_P95_MS: 8.0, config.MODEL_MB: 20.0}
    assert spec.objective.needs_latency and spec.objective.budget_ms() == 8.0
    assert spec.params["serve.int8"].args == (False, True)
    # --max-latency-ms replaces the bound, and adds one to a space without any.
    assert space.load(path, max_latency_ms=5).objective.budget_ms() == 5.0
    plain = space.load("heads", max_latency_ms=5).objective
    assert plain.constraints == {config.LATENCY_P95_MS: 5.0} and plain.needs_latency
    assert not space.load("heads").objective.needs_latency
    with pytest.raises(SpaceError, match="--max-latency-ms: needs a bound above 0"):
        space.load("heads", max_latency_ms=0)
    pareto = space.load("latency").objective
    assert pareto.multi and pareto.directions() == ["max", "min"]
