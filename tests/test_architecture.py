"""The module map of docs/architecture.md, checked on the source (imports parsed, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sentune"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "sentune":
                found |= {f"sentune.{alias.name}" for alias in node.names}
    return found


def _top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported (not those imported in functions)."""
    top = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            top |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module)
    return top


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_search_imports_ray(path):
    if _name(path) == "sentune.search":
        return
    ray = sorted(m for m in _imports(path) if m == "ray" or m.startswith("ray."))
    assert not ray, f"{_name(path)} imports {ray}; only sentune.search may"


def test_search_imports_ray_only_inside_functions():
    """The CLI, the analysis and a trial's worker import it without waiting for Ray."""
    top = _top_level_imports(PACKAGE / "search.py")
    assert not {m for m in top if m == "ray" or m.startswith("ray.")}, top


ANALYSIS_MODULES = sorted((PACKAGE / "analysis").rglob("*.py"))


def _under(imported: set[str], *packages: str) -> set[str]:
    """The imported modules that are one of `packages` or inside one."""
    return {m for m in imported if any(m == p or m.startswith(p + ".") for p in packages)}


def test_the_analysis_package_has_its_modules():
    assert len(ANALYSIS_MODULES) > 1, ANALYSIS_MODULES


@pytest.mark.parametrize("path", ANALYSIS_MODULES, ids=_name)
def test_analysis_imports_neither_search_nor_trial(path):
    imported = _under(_imports(path), "sentune.search", "sentune.train.trial")
    assert not imported, f"{_name(path)} imports {sorted(imported)}"


REPORT_MODULES = sorted((PACKAGE / "report").rglob("*.py"))


@pytest.mark.parametrize("path", REPORT_MODULES, ids=_name)
def test_the_report_draws_only_from_the_analysis(path):
    """The report never trains or scores a model: what it draws, `analysis` computed."""
    imported = _under(
        _imports(path),
        *("sentune.search", "sentune.trial", "sentune.train", "sentune.model"),
        *("sentune.serve.engines", "sentune.data", "torch", "transformers"),
    )
    assert not imported, f"{_name(path)} imports {sorted(imported)}"


@pytest.mark.parametrize("path", ANALYSIS_MODULES + REPORT_MODULES, ids=_name)
def test_the_analysis_and_report_modules_stay_under_600_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 600, f"{_name(path)} has {lines} lines; split it by job"


def _files(name: str) -> list[Path]:
    """The module `name` (a path under the package, without `.py`), or every module of the
    package folder `name`."""
    folder = PACKAGE / name
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{name}.py"]


@pytest.mark.parametrize(
    "name", ["data/batching", "serve/predict", "serve/onnx", "progress", "runs", "config"]
)
def test_light_modules_do_not_import_torch_at_module_level(name):
    for path in _files(name):
        top = _top_level_imports(path)
        assert not {m for m in top if m == "torch" or m.startswith("torch.")}, (_name(path), top)


def test_run_folder_names_are_known_to_runs_only():
    for path in MODULES:
        if _name(path) in ("sentune.runs.layout",):
            continue
        text = path.read_text()
        for literal in ('"sentune.json"', '"sentune_status.json"', '"trial_state.json"'):
            assert literal not in text, f"{_name(path)} spells {literal}; ask runs.layout"


def test_the_modules_imported_ahead_of_the_analysis_exist():
    """`search.ANALYSIS_IMPORTS` names modules by string (imported while the trials run): a
    renamed module would silently be imported after the search again."""
    import importlib.util

    from sentune import search

    for name in search.ANALYSIS_IMPORTS:
        if name.startswith("sentune."):
            module = PACKAGE.parent / name.replace(".", "/")
            assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), name
        else:
            assert importlib.util.find_spec(name) is not None, name


def test_the_modules_imported_ahead_of_the_tuner_exist():
    """`search.TUNE_IMPORTS` names Ray's and Optuna's modules by string (imported while the
    data is prepared): one that a new Ray or Optuna renamed would be found missing here, not
    silently imported after the preparation again."""
    import importlib.util

    from sentune import search

    for name in search.TUNE_IMPORTS:
        assert importlib.util.find_spec(name) is not None, name


#: What each package never imports, lazily or not: a trial runs without Ray, a run folder is
#: read without training code, data knows nothing of training or runs, serving needs no training.
NEVER = {
    "sentune.data": ("sentune.train", "sentune.runs", "sentune.search"),
    "sentune.runs": ("sentune.train", "sentune.search"),
    "sentune.train": ("sentune.search",),
    "sentune.serve": ("sentune.train", "sentune.search"),
}
#: The ground floor imports nothing of sentune above it.
GROUND = ("sentune.config", "sentune.errors", "sentune.machine", "sentune.space")


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(NEVER))
def test_packages_keep_their_nevers(package):
    for path in _files(package.removeprefix("sentune.")):
        banned = sorted(m for m in _imports(path) if _within(m, NEVER[package]))
        assert not banned, f"{_name(path)} imports {banned}"


def test_the_ground_floor_imports_nothing_above_it():
    for path in MODULES:
        if _within(_name(path).removesuffix(".__init__"), GROUND):
            above = {m for m in _imports(path) if m.startswith("sentune.")}
            assert not {m for m in above if not _within(m, GROUND)}, (_name(path), above)
