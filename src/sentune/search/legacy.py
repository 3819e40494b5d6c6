"""What Ray Tune's saved state of a run made before the package split names, made findable.

Tune pickles a search's Tuner, searcher and callbacks into the run folder, and with them the
module paths of the functions they use (`sentune.search._trial_name`, `sentune.storage`, …);
`sentune` 0.1 before the split kept the whole search in `sentune/search.py` and some modules at
the top of the package. `install` points those paths at where the same code lives now, once,
before a resumed search unpickles the state; nothing else imports the old paths.
"""

from __future__ import annotations

import importlib
import sys
import types

#: An old module → the modules that now hold its names (searched in this order).
MODULES = {
    "sentune.storage": ("sentune.runs.storage",),
    "sentune.progress": ("sentune.search.progress", "sentune.train.progress"),
    "sentune.gpus": ("sentune.search.resources",),
    "sentune.preflight": ("sentune.search.preflight",),
    "sentune.strategies": ("sentune.search.strategies",),
    "sentune.trial": ("sentune.train.trial", "sentune.train.device"),
    "sentune.scratch": ("sentune.train.scratch",),
}

#: A name of the old `sentune/search.py` → `module:name` where it is now.
SEARCH_NAMES = {
    "_trial_name": "sentune.search.tuner:_trial_name",
    "_confirm_trial_name": "sentune.search.confirm:_confirm_trial_name",
    "_remember_status": "sentune.search.legacy:_remember_status",
    "_journal_searcher_class": "sentune.search.searcher:_journal_searcher_class",
}


#: A constant of `sentune.config` → the name it has now (read by the old callbacks' code).
CONFIG_NAMES = {"OBJECTIVE": "VAL_MACRO_F1"}


def _remember_status(trial_dir, record) -> None:
    """The ledger of an older run kept each status in memory for an upload at the end; a
    resumed search stores statuses itself (`recovery.finished_trials`, the new ledger's first
    step), so this keeps nothing."""


def install() -> None:
    """Make the old module paths, `sentune.search` and `sentune.config` names resolve
    (idempotent)."""
    for old, news in MODULES.items():
        if old in sys.modules:
            continue
        merged = types.ModuleType(old, f"sentune before the package split: {', '.join(news)}")
        for new in reversed(news):
            merged.__dict__.update(
                {k: v for k, v in vars(importlib.import_module(new)).items() if k[:2] != "__"}
            )
        sys.modules[old] = merged
    config = importlib.import_module("sentune.config")
    for old, new in CONFIG_NAMES.items():
        if not hasattr(config, old):
            setattr(config, old, getattr(config, new))
    search = sys.modules["sentune.search"]
    for name, target in SEARCH_NAMES.items():
        module, _, attr = target.partition(":")
        if not hasattr(search, name):
            setattr(search, name, getattr(importlib.import_module(module), attr))
