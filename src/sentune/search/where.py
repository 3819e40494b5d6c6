"""Where a run is kept: its storage (a folder, or object storage with a local mirror), the path
Ray Tune reads and writes for it, and the command that continues it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sentune.runs import storage

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    pass


from sentune.search.options import SearchOptions

log = logging.getLogger(__name__)


def resume_command(run_dir: Path, options: SearchOptions) -> str:
    """The command line that continues the search in `run_dir`."""
    address = f" --address {options.address}" if options.address else ""
    store = open_store(options)
    if store.remote:
        return f"sentune search --resume {run_dir.name} --storage {store.uri}{address}"
    return f"sentune search --resume {run_dir}{address}"


def open_store(options: SearchOptions) -> storage.Storage:
    """Where the runs are kept (`options.storage`: a folder, or object storage mirrored)."""
    return storage.open_storage(options.storage, cache_dir=options.cache_dir)


def tune_location(run_dir: Path, options: SearchOptions) -> str:
    """Where Ray Tune keeps the run in `run_dir`: its URI in object storage, else the folder."""
    store = open_store(options)
    return store.tune_path(run_dir.name) if store.remote else str(run_dir.resolve())
