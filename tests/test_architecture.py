"""The module map of docs/architecture.md, checked on the source (imports parsed, not run)."""

from __future__ import annotations

import ast
import functools
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
            # `from a.b import c` imports the module `a.b.c` where there is one, else `a.b`.
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _module_of(sub) == sub else node.module)
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


def _module_of(imported: str) -> str | None:
    """The sentune module (file) an import names: `sentune.runs.storage` is the module
    `runs/storage.py`, `sentune.runs.write_json` the package `runs/__init__.py`."""
    if not imported.startswith("sentune"):
        return None
    while imported:
        path = PACKAGE.parent / imported.replace(".", "/")
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return imported
        imported = imported.rpartition(".")[0]
    return None


@functools.cache
def _graph() -> dict[str, set[str]]:
    """Each sentune module → the sentune modules it imports (lazily or not)."""
    graph = {}
    for path in MODULES:
        name = _name(path).removesuffix(".__init__")
        graph[name] = {m for m in map(_module_of, _imports(path)) if m and m != name}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _in_search(name: str) -> bool:
    return name == "sentune.search" or name.startswith("sentune.search.")


#: Modules that run searches, and so reach Ray through `sentune.search` (never by themselves).
SEARCH_USERS = ("sentune.cli", "sentune.bench")


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_only_the_search_package_imports_ray(path):
    """Only modules inside `sentune/search/` name Ray, lazily or not."""
    if _in_search(_name(path)):
        return
    ray = sorted(m for m in _imports(path) if m == "ray" or m.startswith("ray."))
    assert not ray, f"{_name(path)} imports {ray}; only sentune.search may"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_nothing_reaches_ray_through_another_module(path):
    """No module outside the search package reaches it, at any depth and lazily or not (so no
    Ray through an import of an import), except the commands that run searches."""
    name = _name(path).removesuffix(".__init__")
    if _in_search(name) or _within(name, SEARCH_USERS):
        return
    reached = sorted(m for m in _reach(_graph(), name) if _in_search(m))
    assert not reached, f"{name} reaches {reached}: only the search package knows Ray"


@pytest.mark.parametrize("path", sorted((PACKAGE / "search").rglob("*.py")), ids=_name)
def test_the_search_package_imports_ray_only_inside_functions(path):
    """The CLI, the analysis and a trial's worker import it without waiting for Ray."""
    top = _top_level_imports(path)
    assert not {m for m in top if m == "ray" or m.startswith("ray.")}, (_name(path), top)


def test_no_import_cycles():
    """Between modules, counting imports inside functions too (a package's `__init__` is the
    package's module; a submodule's parent package is not imported through it)."""
    graph = _graph()
    cycles = sorted(name for name in graph if name in _reach(graph, name))
    assert not cycles, f"modules in an import cycle: {cycles}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_over_600_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 600, f"{_name(path)} has {lines} lines; split it by job"


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


def _files(name: str) -> list[Path]:
    """The module `name` (a path under the package, without `.py`), or every module of the
    package folder `name`."""
    folder = PACKAGE / name
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{name}.py"]


@pytest.mark.parametrize(
    "name", ["data/batching", "serve/predict", "serve/onnx", "search/progress", "runs", "config"]
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
GROUND = ("sentune.config", "sentune.errors", "sentune.lazy", "sentune.machine", "sentune.space")


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
