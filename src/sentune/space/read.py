"""Read and validate a space file (`search_spaces/<name>.yaml`) into a `SearchSpec`.

Every problem raises `SpaceError` naming the file, the key and the fix. The format is described
in the package's docstring (`sentune.space`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from sentune import config
from sentune.config import BudgetConfig
from sentune.errors import SpaceError
from sentune.space.objective import parse_objective, with_latency_budget
from sentune.space.params import Param, condition_order
from sentune.space.spec import MAX_LENGTH_KEY, SearchSpec
from sentune.space.start import can_take, check_start

#: Where space names are looked up: the working directory first, then the source checkout.
SPACE_DIRS = (Path("search_spaces"), Path(__file__).resolve().parents[3] / "search_spaces")

_TOP_KEYS = (
    "description",
    "model",
    "data",
    "budget",
    "sampler",
    "objective",
    "objectives",
    "fixed",
    "search",
    "start",
)

DISTRIBUTIONS = ("choice", "uniform", "quniform", "loguniform", "int", "qrandint", "quantiles")


def list_spaces() -> list[str]:
    """Names of the spaces found in `search_spaces/`."""
    names = {p.stem for d in SPACE_DIRS if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_space(name_or_path: str | Path) -> Path:
    """The file of a space given by name (`heads`) or path (`my/space.yaml`)."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise SpaceError(f"{candidate}: no such space file; check the path")
        return candidate
    for folder in SPACE_DIRS:
        path = folder / f"{name_or_path}.yaml"
        if path.is_file():
            return path
    known = ", ".join(list_spaces()) or "none"
    raise SpaceError(f"unknown space {str(name_or_path)!r}; known spaces: {known}")


def load(
    name_or_path: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    max_latency_ms: float | None = None,
) -> SearchSpec:
    """Read, validate and return a search space.

    Args:
        name_or_path: A space name from `search_spaces/` or a path to a YAML file.
        overrides: Values that replace the file's, by dotted key (`budget.trials`,
            `data.dataset`, `train.learning_rate`, …) or `model`. An override of a searched key
            fixes it.
        max_latency_ms: Bound the p95 latency (`config.LATENCY_METRIC`) at this many
            milliseconds: sets or replaces the space's constraint (`--max-latency-ms`).

    Returns:
        The validated `SearchSpec`.
    """
    path = find_space(name_or_path)
    where = str(path)
    raw = _read_yaml(path)
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise SpaceError(
            f"{where}: unknown top-level key {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}"
        )
    model = raw.get("model", "minilm")
    if not isinstance(model, str) or not model:
        raise SpaceError(f"{where}: model: give a model name or folder, got {model!r}")
    data = _section_values(where, "data", raw.get("data"))
    capped = {key for key in ("data.train_size", "data.val_size") if data.get(key) is not None}
    budget = _section_values(where, "budget", raw.get("budget"))
    fixed = _fixed_values(where, raw.get("fixed"))
    params = _params(where, raw.get("search"))
    for key in sorted(set(fixed) & set(params)):
        raise SpaceError(f"{where}: {key} is both fixed and searched; keep it in one of the two")

    for key, value in (overrides or {}).items():
        origin = f"override {key}"
        if key == "model":
            model = value
        elif key.startswith("data."):
            _check_key(origin, key, tunable=False)
            data[key] = _check_value(origin, key, value)
            capped.discard(key)  # a size given on the command line is exact
        elif key.startswith("budget."):
            budget[key] = _check_value(origin, key, value)
        else:
            _check_key(origin, key, tunable=True)
            fixed[key] = _check_value(origin, key, value)
            params.pop(key, None)

    for key, value in config.MODEL_RECIPES.get(model, {}).items():
        if key not in fixed and key not in params:
            fixed[key] = value  # the model's recipe, where the space leaves the key unset
    data["data.capped_sizes"] = tuple(sorted(key.split(".", 1)[1] for key in capped))
    params = _resolve_fixed_conditions(params, fixed)
    budget_cfg = config.build_section("budget", budget)
    _check_budget(where, budget_cfg)
    sampler = _sampler(where, raw.get("sampler"), params)
    starts = _starts(where, raw.get("start"), params, fixed)
    objective = parse_objective(where, raw.get("objective"), raw.get("objectives"))
    if max_latency_ms is not None:
        objective = with_latency_budget(objective, max_latency_ms)
    return SearchSpec(
        name=path.stem,
        path=path,
        description=str(raw.get("description", "")).strip(),
        model=model,
        data=config.build_section("data", data),
        budget=budget_cfg,
        fixed=fixed,
        params=params,
        sampler=sampler,
        objective=objective,
        starts=starts,
    )


# --- the file and its values ----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` (no dot) as a string; people write learning rates that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML the way space files are read (exponent numbers are floats)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict:
    try:
        raw = parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpaceError(f"{path}:{line} malformed YAML ({problem}); fix the syntax") from None
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read ({exc.strerror})") from None
    if raw is None:
        raise SpaceError(f"{path}: the file is empty; it needs at least a `search:` mapping")
    if not isinstance(raw, dict):
        raise SpaceError(
            f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}"
        )
    return raw


def _section_values(where: str, section: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: {section}: must be a mapping of field: value")
    values = {}
    for name, value in raw.items():
        key = f"{section}.{name}"
        _check_key(where, key, tunable=False)
        values[key] = _check_value(where, key, value)
    return values


def _fixed_values(where: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: fixed: must be a mapping of dotted key: value")
    values = {}
    for key, value in raw.items():
        _check_key(where, key, tunable=True)
        values[key] = _check_value(where, key, value)
    return values


def _check_key(where: str, key: Any, *, tunable: bool) -> None:
    if not isinstance(key, str) or key not in config.dotted_keys():
        close = [k for k in config.dotted_keys() if str(key).split(".")[-1] == k.split(".")[-1]]
        hint = f"; did you mean {close[0]}?" if close else "; see config.py for the known keys"
        raise SpaceError(f"{where}: unknown parameter {key!r}{hint}")
    section = key.split(".", 1)[0]
    if tunable and section not in config.TUNABLE_SECTIONS:
        raise SpaceError(
            f"{where}: {key} is fixed for a whole search; set it under `{section}:` instead"
        )


def _check_value(where: str, key: str, value: Any) -> Any:
    """Check one value against the field's type, choices and limits; return it normalised."""
    kind = config.field_type(key)
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise SpaceError(f"{where}: {key}: needs a value, got null")
    if value == config.MAX_LENGTH_AUTO and not kind.startswith("str"):
        if key not in config.AUTO_KEYS:
            raise SpaceError(
                f"{where}: {key}: auto is only for {', '.join(config.AUTO_KEYS)}; "
                f"give {key} a value"
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: {key}: needs true or false, got {value!r}")
        return value
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise SpaceError(f"{where}: {key}: needs a string, got {value!r}")
        allowed = config.CHOICES.get(key)
        if allowed and value not in allowed:
            raise SpaceError(f"{where}: {key}: {value!r} is not one of {', '.join(allowed)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpaceError(f"{where}: {key}: needs a number, got {value!r}")
    if kind.startswith("int"):
        if float(value) != int(value):
            raise SpaceError(f"{where}: {key}: needs a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not math.isfinite(value):
        raise SpaceError(f"{where}: {key}: needs a finite number, got {value!r}")
    problem = config.outside_limits(key, value)
    if problem:
        raise SpaceError(f"{where}: {key}: {problem}")
    if key == "budget.gpus_per_trial" and value > 1 and value != int(value):
        raise SpaceError(
            f"{where}: {key}: a fraction of a GPU must be at most 1, got {value!r}; "
            "use a whole number of GPUs or a fraction below 1"
        )
    return value


def _params(where: str, raw: Any) -> dict[str, Param]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: search: must be a mapping of dotted key: distribution")
    params, conditions = {}, {}
    for key, spec in raw.items():
        _check_key(where, key, tunable=True)
        if isinstance(spec, dict) and "when" in spec:
            spec = dict(spec)
            conditions[key] = spec.pop("when")
        params[key] = _param(f"{where}: {key}", key, spec)
    return _with_conditions(where, params, conditions)


def _param(where: str, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError(
            f"{where}: give exactly one distribution, e.g. {{uniform: [0.1, 0.5]}} "
            f"or {{choice: [a, b]}}; got {spec!r}"
        )
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise SpaceError(
            f"{where}: unknown distribution {kind!r}; use one of {', '.join(DISTRIBUTIONS)}"
        )
    if kind == "quantiles":
        return _quantiles(where, key, args)
    if not isinstance(args, list) or not args:
        raise SpaceError(f"{where}: {kind} needs a list of values, got {args!r}")
    if kind == "choice":
        values = [_check_value(where, key, v) for v in args]
        if len(set(map(repr, values))) != len(values):
            raise SpaceError(f"{where}: choice has repeated values {args!r}; list each once")
        if config.MAX_LENGTH_AUTO in values:
            raise SpaceError(
                f"{where}: auto cannot be one choice among others; search quantiles of the "
                "token lengths instead, e.g. {quantiles: [0.5, 0.9, 0.99]}"
            )
        return Param(kind, tuple(values))
    if config.field_type(key) == "bool":
        raise SpaceError(f"{where}: {key} is true or false; use {{choice: [false, true]}}")

    arity = 3 if kind in ("quniform", "qrandint") else 2
    if len(args) != arity:
        shape = "[low, high, q]" if arity == 3 else "[low, high]"
        raise SpaceError(f"{where}: {kind} needs {shape}, got {args!r}")
    if any(isinstance(a, bool) or not isinstance(a, int | float) for a in args):
        raise SpaceError(f"{where}: {kind} needs numbers, got {args!r}")
    if kind in ("int", "qrandint") and any(float(a) != int(a) for a in args):
        raise SpaceError(f"{where}: {kind} needs whole numbers, got {args!r}")
    low, high = args[0], args[1]
    if not low < high:
        raise SpaceError(f"{where}: {kind} needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {args!r}")
    if arity == 3 and not 0 < args[2] <= high - low:
        raise SpaceError(f"{where}: {kind} needs 0 < q <= high - low, got {args!r}")
    is_int = config.field_type(key).startswith("int")
    if is_int and kind in ("uniform", "quniform", "loguniform"):
        raise SpaceError(f"{where}: {key} is a whole number; use int or qrandint, not {kind}")
    if not is_int and kind in ("int", "qrandint"):
        raise SpaceError(f"{where}: {key} is a real number; use uniform or loguniform, not {kind}")
    # Both ends must be legal values of the field.
    _check_value(where, key, low)
    _check_value(where, key, high)
    return Param(kind, tuple(args))


def _quantiles(where: str, key: str, args: Any) -> Param:
    if key != MAX_LENGTH_KEY:
        raise SpaceError(
            f"{where}: quantiles is only for {MAX_LENGTH_KEY}; give {key} another distribution, "
            "e.g. {choice: [a, b]}"
        )
    numbers = isinstance(args, list) and all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in args
    )
    if not numbers or not args or not all(0 < a <= 1 for a in args):
        raise SpaceError(
            f"{where}: quantiles needs a non-empty list of numbers in (0, 1], got {args!r}; "
            "e.g. {quantiles: [0.5, 0.9, 0.99]}"
        )
    return Param("quantiles", tuple(float(a) for a in args))


def _starts(
    where: str, raw: Any, params: dict[str, Param], fixed: dict[str, Any]
) -> tuple[dict[str, Any], ...]:
    """The space's `start:` list, each point checked against the searched keys (a
    `train.max_length` of quantiles is checked once the data gives its values, see
    `SearchSpec.start_points`). A key that an override fixed leaves the points: the override
    wins, and a point left empty is dropped."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, dict) and p for p in raw):
        raise SpaceError(
            f"{where}: start: give a list of mappings of searched key: value, e.g. "
            "[{head.dropout: 0.1}]"
        )
    points = []
    for number, point in enumerate(raw, start=1):
        values = {}
        for key, value in point.items():
            _check_key(f"{where}: start point {number}", key, tunable=True)
            if key not in fixed:
                values[key] = _check_value(f"{where}: start point {number}", key, value)
        if values:
            points.append(values)
    settled = {k: p for k, p in params.items() if p.kind != "quantiles"}
    later = set(params) - set(settled)  # quantiles: their values come from the data
    for number, point in enumerate(points, start=1):
        try:
            check_start(settled, {k: v for k, v in point.items() if k not in later}, number)
        except ValueError as problem:
            raise SpaceError(f"{where}: {problem}") from None
    return tuple(points)


def _check_budget(where: str, budget: BudgetConfig) -> None:
    if budget.grace_period > budget.max_epochs:
        raise SpaceError(
            f"{where}: budget.grace_period ({budget.grace_period:g}) exceeds budget.max_epochs "
            f"({budget.max_epochs}); lower the grace period or raise max_epochs"
        )
    parts = budget.grace_period * budget.evals_per_epoch
    if abs(parts - round(parts)) > 1e-9:
        every = f"{1 / budget.evals_per_epoch:g}"
        raise SpaceError(
            f"{where}: budget.grace_period ({budget.grace_period:g}) falls between evaluations "
            f"(budget.evals_per_epoch {budget.evals_per_epoch}: every {every} epoch); use a "
            f"multiple of {every}"
        )


# --- the sampler a space names --------------------------------------------------------------------


def _sampler(where: str, name: Any, params: dict[str, Param]) -> str | None:
    if name is None:
        return None
    check_sampler(where, name, params)
    return name


def check_sampler(where: str, name: Any, params: dict[str, Param]) -> None:
    """Check that sampler `name` exists and can search `params`.

    Raises:
        SpaceError: An unknown sampler, or CMA-ES on a space with a `choice` parameter.
    """
    if name not in config.SAMPLERS:
        raise SpaceError(
            f"{where}: sampler: unknown sampler {name!r}; use one of {', '.join(config.SAMPLERS)}"
        )
    categorical = sorted(key for key, p in params.items() if p.kind == "choice")
    if name == "cmaes" and categorical:
        raise SpaceError(
            f"{where}: sampler cmaes cannot search choice parameters ({', '.join(categorical)}); "
            "use sampler tpe, or make them numeric ranges"
        )


# --- conditional parameters -----------------------------------------------------------------------


def _with_conditions(where: str, params: dict[str, Param], raw: dict[str, Any]) -> dict[str, Param]:
    """Attach each `when:` to its parameter, checked: parents are searched, values are theirs,
    no cycles."""
    out = dict(params)
    for key, when in raw.items():
        at = f"{where}: {key}: when"
        if not isinstance(when, dict) or not when:
            raise SpaceError(
                f"{at}: give a mapping of searched parameter: [values], e.g. "
                f"{{head.layers: [1, 2]}}; got {when!r}"
            )
        conditions = []
        for parent, allowed in when.items():
            _check_key(at, parent, tunable=True)
            if parent not in params:
                raise SpaceError(
                    f"{at}: {parent} is not searched; a condition can only name a parameter "
                    "under `search:`"
                )
            if parent == key:
                raise SpaceError(f"{at}: {key} cannot depend on itself; drop the condition")
            if not isinstance(allowed, list) or not allowed:
                raise SpaceError(f"{at}: {parent}: give a list of its values, got {allowed!r}")
            values = tuple(_check_value(at, parent, v) for v in allowed)
            unreachable = [v for v in values if not can_take(params[parent], v)]
            if unreachable:
                raise SpaceError(
                    f"{at}: {parent} never takes {unreachable[0]!r} in this search; use values "
                    f"it can take ({', '.join(map(str, params[parent].args))})"
                )
            conditions.append((parent, values))
        out[key] = Param(params[key].kind, params[key].args, tuple(conditions))
    try:
        condition_order(out)
    except ValueError as cycle:
        raise SpaceError(f"{where}: conditions form a cycle ({cycle}); break it") from None
    return out


def _resolve_fixed_conditions(params: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Param]:
    """Settle conditions on parents that an override fixed: a condition that the fixed value
    meets is dropped; a parameter whose condition it fails is never active, so it is not
    searched (nor are the parameters that depend on it)."""
    out = dict(params)
    changed = True
    while changed:
        changed = False
        for key, param in list(out.items()):
            kept = []
            for parent, allowed in param.when:
                if parent in out:
                    kept.append((parent, allowed))
                elif parent not in fixed or fixed[parent] not in allowed:
                    del out[key]
                    changed = True
                    break
            else:
                if len(kept) != len(param.when):
                    out[key] = Param(param.kind, param.args, tuple(kept))
                    changed = True
    return out
