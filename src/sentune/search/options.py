"""The runtime options of a search (where it runs and writes, not what it searches), read by
every step of the search package and by the resources and preflight checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentune import config
from sentune.config import TrialSettings
from sentune.tracking import TrackingOptions

if TYPE_CHECKING:
    # scikit-learn and friends take seconds to import: `--address` is checked before them.
    pass


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOptions:
    """Runtime options of a search: where it runs and writes, not what it searches.

    Attributes:
        address: A Ray cluster to join (`auto`, `ray://…`, `host:port`); None starts local Ray.
        storage: The folder that holds one subfolder per run, or an object-storage URI
            (`s3://bucket/prefix`, any pyarrow filesystem; `storage.py` mirrors it locally).
        precision: `auto`, `fp32`, `bf16` or `fp16` for every trial.
        device: `auto`, `cpu` or `cuda`.
        dashboard: Start the Ray dashboard (local runs).
        dashboard_host: The address it listens on; keep 127.0.0.1 and tunnel to it.
        dashboard_port: Its port (None: Ray's default, 8265).
        num_cpus: CPUs local Ray may use (None: all of this machine's).
        cache_dir: Where tokenized data is cached between searches.
        strategy: A name of `STRATEGIES` (sampler + scheduler); None: the space's sampler
            (TPE unless it names one) with ASHA.
        max_failures: Retries of a failed trial (from its latest checkpoint) before it is
            recorded as errored.
        verbose: Ray Tune's status tables, Ray's warnings and the trials' own output in the
            terminal; otherwise one line per trial event with an estimate (`progress.py`).
        name: The run folder's name (`<storage>/<name>`); None names it `<space>-<timestamp>`.
        trial_hook: Called in the trial's process after each report with the metrics and
            whether the trial continued from a checkpoint; what it raises fails the trial (the
            fault-tolerance tests inject failures through it). Pickled to the trial workers.
        ledger_hook: Called in the search's process by the trial ledger (`trial_ledger`) as
            it records a trial's outcome: `("before-status", trial)` once the journal has it
            and before the status is written, `("after-status", trial)` once the status is
            stored. The kill-and-resume tests kill the driver there. Pickled with Tune's state.
        mps: Run the trials under CUDA MPS (`cuda_mps`): packed trials then share the GPU's
            SMs at once rather than by time slices. Opt-in and not yet measured.
        started_at: When the command started (`time.time()`); trials report the seconds from
            then to their first step (`config.FIRST_STEP_S`). None: when `run` was called.
        tracking: Where the search logs (`--log-to` MLflow, W&B); a resumed search keeps
            logging where it logged unless this names other trackers.
    """

    address: str | None = None
    storage: str | Path = config.STORAGE_DIR
    precision: str = TrialSettings.precision
    device: str = TrialSettings.device
    dashboard: bool = True
    dashboard_host: str = config.DASHBOARD_HOST
    dashboard_port: int | None = None
    num_cpus: int | None = None
    cache_dir: Path = Path(config.CACHE_DIR)
    strategy: str | None = None
    max_failures: int = config.MAX_FAILURES
    verbose: bool = False
    name: str | None = None
    trial_hook: Callable[[dict[str, Any], bool], None] | None = None
    ledger_hook: Callable[[str, Any], None] | None = None
    mps: bool = False
    started_at: float | None = None
    tracking: TrackingOptions = TrackingOptions()
