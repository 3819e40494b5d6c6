"""Read and validate `search_spaces/<name>.yaml` into a `SearchSpec`.

A space file names its model, dataset, budget and the parameters it searches, by dotted keys
into the dataclasses of `config.py` (which alone hold the defaults)::

    description: Which head on top of the encoder classifies tweets best?
    model: minilm
    data: {dataset: tweets, train_size: 4000}
    budget: {trials: 8, max_epochs: 3}
    fixed: {train.learning_rate: 1.0e-4}
    search:
      head.dropout: {uniform: [0.1, 0.5]}
      head.layers: {choice: [0, 1, 2]}

Distributions: `choice: [a, b, …]`, `uniform: [low, high]`, `quniform: [low, high, q]`,
`loguniform: [low, high]`, `int: [low, high]` and `qrandint: [low, high, q]` (integer bounds
inclusive). A parameter may be conditional: `head.width: {choice: [128, 384], when: {head.layers:
[1, 2]}}` is drawn only when `head.layers` took 1 or 2; otherwise it is left out of the trial's
configuration, which then uses the `config.py` default (`SearchSpec.define_by_run`). Every
problem raises `SpaceError` naming the file, the key and the fix.

`train.max_length` may follow the data: `auto` (fixed) or `{quantiles: [0.5, 0.9, 0.99]}`
(searched) are resolved once against the training split's token lengths by
`resolve_max_length`, before any trial runs.

Modules, one job each: `read` (the file, checked into a `SearchSpec`), `objective` (what a space
optimises), `params` (a `Param` and its one mapping to Optuna, `DefineByRun`), `start` (the
recipe and the listed start points the study tries first), `spec`
(`SearchSpec` and `train.max_length` from the data). Every public name is importable from here:
saved searches pickle `sentune.space.DefineByRun` and `sentune.space.Param`.
"""

from sentune.space.objective import parse_objective, with_latency_budget
from sentune.space.params import DefineByRun, Param, condition_order, is_active
from sentune.space.read import (
    DISTRIBUTIONS,
    SPACE_DIRS,
    check_sampler,
    find_space,
    list_spaces,
    load,
    parse_yaml,
)
from sentune.space.spec import (
    MAX_LENGTH_KEY,
    MaxLength,
    SearchSpec,
    covering_max_length,
    resolve_max_length,
)
from sentune.space.start import RECIPE, StartPoint, start_points

__all__ = [
    "DISTRIBUTIONS",
    "MAX_LENGTH_KEY",
    "RECIPE",
    "SPACE_DIRS",
    "DefineByRun",
    "MaxLength",
    "Param",
    "SearchSpec",
    "StartPoint",
    "check_sampler",
    "condition_order",
    "covering_max_length",
    "find_space",
    "is_active",
    "list_spaces",
    "load",
    "parse_objective",
    "parse_yaml",
    "resolve_max_length",
    "start_points",
    "with_latency_budget",
]
