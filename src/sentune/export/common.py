"""What every part of an export shares: file names, options, the winner, the result type, and
the helpers that keep paths out of the files."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentune import config, runs
from sentune.analysis import format_mean_std
from sentune.data import Split
from sentune.runs import Manifest
from sentune.serve.engines import ONNX_OPSET, Engine, quiet  # noqa: F401 - the export's names
from sentune.train.encoders import HUB_IDS

log = logging.getLogger(__name__)

FORMATS = ("hf", "onnx", "int8", "pt2")
DEFAULT_FORMATS = ("hf", "onnx", "int8")
EXPORT_DIR = "export"
METRICS_FILE = "metrics.json"
BENCHMARK_FILE = "benchmark.json"
CARD_FILE = "README.md"
PT2_FILE = "model.pt2"
#: Largest allowed |logit difference| between ONNX (or torch.export) and PyTorch.
PARITY_ATOL = 1e-4
#: Checkpoint files not copied as they are: the weights and config are saved anew, the trial's
#: state and the optimizer state of an interrupted run are training's business, not a model's.
CHECKPOINT_SKIP = (
    runs.MODEL_CONFIG_FILE,
    "model.safetensors",
    runs.STATE_FILE,
    runs.TRAINING_STATE_FILE,
    runs.PREDICTIONS_FILE,
)
#: Bootstrap resamples and seed of the test scores' 95 % intervals.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: The test metrics given with an interval, beside the TF-IDF floor's.
INTERVAL_METRICS = (config.MACRO_F1, config.ACCURACY)
EVAL_BATCH = 64
TOKENIZATION_NOTE = (
    "excluded: inputs are tokenized and padded before timing, for every format alike"
)


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how to check it.

    Attributes:
        trial: A trial id to export instead of the leaderboard's best.
        formats: Any of `FORMATS` (`hf`, `onnx`, `int8`, `pt2`); `int8` needs `onnx`.
        force: Replace an existing export.
        threads: Intra-op threads of PyTorch and onnxruntime (None: the CPU count).
        parity_texts: Validation texts the ONNX parity check runs on.
        latency_runs: Timed batch-1 calls per format.
        throughput_batches: Timed batch-32 calls per format.
        warmup: Untimed calls before each timing.
        cache_dir: Token id cache of `data.prepare`.
        max_latency_ms: A p95 batch-1 latency budget: export the best trial on the Pareto front
            of macro-F1 against latency that meets it (or check `trial`), re-measure the
            exported model and refuse when it misses the budget (threads: the trials' unless
            `threads` is given).
        refit: Export the finished refit of the chosen configuration on the whole training
            split (`runs.finished_refit`) where there is one; False: the search's checkpoint.
    """

    trial: str | None = None
    formats: tuple[str, ...] = DEFAULT_FORMATS
    force: bool = False
    threads: int | None = None
    parity_texts: int = 256
    latency_runs: int = 100
    throughput_batches: int = 20
    warmup: int = 5
    cache_dir: Path = Path(config.CACHE_DIR)
    max_latency_ms: float | None = None
    refit: bool = True


@dataclass(frozen=True)
class Winner:
    """The trial that is exported and its best epoch's checkpoint.

    After a confirmation over seeds, `trial_id` is the search trial of the configuration with
    the best mean, and the checkpoint is that of its best seed (the search trial's or a
    confirmation trial's); `confirmed` holds the seeds' scores.
    """

    trial_id: str
    rank: int
    checkpoint: Path
    params: dict[str, Any]
    val_macro_f1: float
    best_epoch: float
    max_length: int
    #: How the trial cut longer texts (`config.TRUNCATIONS`); serving cuts the same way.
    truncation: str = "head"
    #: The configuration's validation macro-F1 per seed (None: not confirmed over seeds).
    confirmed: dict[int, float] | None = None
    #: The record of the refit on the whole training split (`runs.REFIT_FILE`) whose model is
    #: exported (`checkpoint` is then the refit's); None: the search's checkpoint is exported.
    refit: dict[str, Any] | None = None

    @property
    def confirmed_line(self) -> str:
        """`0.7012 ± 0.0040 over 2 seeds (0, 1)`, or "" when not confirmed."""
        if not self.confirmed:
            return ""
        return format_mean_std(list(self.confirmed.values())) + (
            f" over {len(self.confirmed)} seeds ({', '.join(map(str, self.confirmed))})"
        )

    def truncated(self, split: Split) -> list[np.ndarray]:
        """The token ids of `split` cut as the trial cut them."""
        return split.truncated(self.max_length, self.truncation)


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what was measured."""

    path: Path
    winner: Winner
    metrics: dict[str, Any]
    benchmark: dict[str, Any]


def base_model_id(manifest: Manifest) -> str:
    """The base model by its hub id (`sentence-transformers/all-MiniLM-L6-v2`), or by its folder
    name when it was a local folder: never a path of the training machine."""
    return HUB_IDS.get(manifest.model) or portable_text(manifest.model)


#: An absolute POSIX path (not the `//` of a URL, not a fraction like `1/2`).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)*([\w.@+~-]+)/?")


def portable_text(text: str) -> str:
    """`text` with every absolute path replaced by its last component (the file or folder name).

    A space file or a dataset named by its path on the training machine says nothing useful
    elsewhere, and can say too much (user names, mount points).
    """
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), text)


def macro_f1_of(scores: dict[str, Any], split: str) -> float:
    """Macro-F1 of one format on `validation` or `test` in `metrics.json`."""
    prefix = config.VAL if split == "validation" else config.TEST
    return scores[split][config.metric_name(prefix, config.MACRO_F1)]
