"""Every default of sentune, in one place.

A search-space YAML and the CLI name fields of these dataclasses by dotted key
(`head.dropout`, `train.learning_rate`, `data.train_size`, `budget.trials`) and never
repeat a default. Metric names are constants here; the objective is written once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

# --- metrics: each has one name from the trial to the export -------------------------------
#: A metric's name is `<split>_<metric>` (`val_macro_f1`, `test_macro_f1`); build it with
#: `metric_name`. Per-class metrics are `<split>_precision/<label>` and `<split>_recall/<label>`.
MACRO_F1 = "macro_f1"
F1_WEIGHTED = "f1_weighted"
ACCURACY = "accuracy"
LOSS = "loss"
PRECISION = "precision"
RECALL = "recall"
VAL, TEST, TRAIN = "val", "test", "train"


def metric_name(split: str, metric: str) -> str:
    """The one name of `metric` on `split`: `metric_name("val", MACRO_F1) == "val_macro_f1"`."""
    return f"{split}_{metric}"


#: The objective of every search (DESIGN.md contract): validation macro-F1, maximised.
OBJECTIVE = metric_name(VAL, MACRO_F1)
MODE = "max"
VAL_F1_WEIGHTED = metric_name(VAL, F1_WEIGHTED)
VAL_ACCURACY = metric_name(VAL, ACCURACY)
VAL_LOSS = metric_name(VAL, LOSS)
TRAIN_LOSS = metric_name(TRAIN, LOSS)
EPOCH = "epoch"
TRAIN_SAMPLES_PER_S = "train_samples_per_s"
VAL_PRECISION_PREFIX = metric_name(VAL, PRECISION) + "/"
VAL_RECALL_PREFIX = metric_name(VAL, RECALL) + "/"

POOLINGS = ("cls", "pooler", "mean")
ACTIVATIONS = ("gelu", "relu", "tanh")
#: How class imbalance is handled: loss weights (none/balanced/sqrt) or oversampling.
IMBALANCE = ("none", "balanced", "sqrt", "oversample")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Optuna samplers a space (`sampler:`) or a strategy may name; TPE unless one is named.
SAMPLERS = ("tpe", "random", "qmc", "gp", "cmaes")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are split. Fixed for a whole search."""

    dataset: str = "tweets"
    #: Column names; None means the source's known names (or `text`/`label`).
    text_column: str | None = None
    label_column: str | None = None
    #: Stratified subsample of the training split (None: all of it); for CPU-sized runs.
    train_size: int | None = None
    #: Stratified subsample of the validation split (None: all of it).
    val_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_words: int = 3
    seed: int = 0


@dataclass(frozen=True)
class HeadConfig:
    """The classification head on top of the encoder."""

    pooling: str = "cls"
    #: Hidden layers between the pooled vector and the output layer (0-3).
    layers: int = 0
    #: Width of each hidden layer; None means the encoder's hidden size.
    width: int | None = None
    activation: str = "gelu"
    dropout: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe of one trial."""

    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    #: Linear warmup over this share of all optimizer steps, then linear decay to zero.
    warmup_ratio: float = 0.1
    #: Examples per forward pass.
    batch_size: int = 32
    #: Examples per optimizer step; gradient accumulation makes up the difference.
    effective_batch_size: int = 32
    max_length: int = 128
    imbalance: str = "none"
    max_grad_norm: float = 1.0
    #: Evaluate every N optimizer steps as well as at each epoch's end (None: epochs only).
    eval_every_steps: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class BudgetConfig:
    """How much searching to do and how ASHA cuts it short."""

    trials: int = 8
    max_epochs: int = 3
    grace_period: int = 1
    reduction_factor: int = 2
    #: Trials running at once (None: as many as the resources allow).
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    #: Stop the whole search after this many seconds (None: no limit).
    time_budget_s: float | None = None
    #: Seed of the Optuna sampler.
    seed: int = 0


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "head": HeadConfig,
    "train": TrainConfig,
    "budget": BudgetConfig,
}
#: Sections a search may vary per trial; `data` and `budget` are fixed for a whole search.
TUNABLE_SECTIONS = ("head", "train")


def dotted_keys(section: str | None = None) -> list[str]:
    """All dotted keys (`head.dropout`, …), optionally of one section."""
    names = [section] if section else list(SECTIONS)
    return [f"{name}.{f.name}" for name in names for f in fields(SECTIONS[name])]


def field_type(key: str) -> str:
    """The annotated type of a dotted key as written in the dataclass (e.g. `int | None`)."""
    section, name = key.split(".", 1)
    return {f.name: str(f.type) for f in fields(SECTIONS[section])}[name]


def build_section(section: str, values: dict[str, Any]) -> Any:
    """Build one section's dataclass from `{dotted_key: value}`; keys of other sections are ignored.

    Unknown keys of this section are an internal error here: `space.py` validates user input first.
    """
    prefix = section + "."
    own = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
    return SECTIONS[section](**own)


def to_dotted(obj: Any, section: str) -> dict[str, Any]:
    """Flatten a section dataclass back into `{dotted_key: value}`."""
    return {f"{section}.{k}": v for k, v in dataclasses.asdict(obj).items()}


@dataclass(frozen=True)
class TrialSettings:
    """Runtime settings of a trial: not searched, travel beside the Tune config.

    Attributes:
        model: A registered model name (`minilm`, `bert-base-uncased`), a hub id or a local folder.
        max_epochs: Epochs to train unless the scheduler stops the trial first.
        precision: `auto` (fp16/bf16 on CUDA, bf16 on CPUs with native bf16, else fp32) or explicit.
        device: `auto`, `cpu` or `cuda`.
        num_threads: torch intra-op threads on CPU (None: leave torch's default).
        checkpoint_dir: Where the trial writes its checkpoints before handing them to `report`.
        resumable: Hand `report` a checkpoint at every evaluation, with the training state
            (optimizer, scheduler, RNGs) beside the weights, so that the trial can continue from
            its latest one; otherwise only the best evaluation's weights are saved.
    """

    model: str = "minilm"
    max_epochs: int = BudgetConfig.max_epochs
    precision: str = "auto"
    device: str = "auto"
    num_threads: int | None = None
    checkpoint_dir: str | None = None
    resumable: bool = False


#: Allowed values of the string-valued fields.
CHOICES: dict[str, tuple[str, ...]] = {
    "head.pooling": POOLINGS,
    "head.activation": ACTIVATIONS,
    "train.imbalance": IMBALANCE,
}
#: Inclusive numeric bounds of fields (None: unbounded on that side).
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "data.train_size": (1, None),
    "data.val_size": (1, None),
    "data.val_fraction": (0.01, 0.5),
    "data.test_fraction": (0.01, 0.5),
    "data.min_words": (0, None),
    "head.layers": (0, 3),
    "head.width": (1, None),
    "head.dropout": (0.0, 0.95),
    "train.learning_rate": (1e-8, 1.0),
    "train.weight_decay": (0.0, 1.0),
    "train.warmup_ratio": (0.0, 1.0),
    "train.batch_size": (1, None),
    "train.effective_batch_size": (1, None),
    "train.max_length": (8, None),
    "train.max_grad_norm": (0.0, None),
    "train.eval_every_steps": (1, None),
    "budget.trials": (1, None),
    "budget.max_epochs": (1, None),
    "budget.grace_period": (1, None),
    "budget.reduction_factor": (2, None),
    "budget.concurrency": (1, None),
    "budget.cpus_per_trial": (0.1, None),
    "budget.gpus_per_trial": (0.0, None),
    "budget.time_budget_s": (1, None),
}

# --- where things are written (the CLI's defaults; each option dataclass points here) -------
#: Ray Tune's storage: one folder per run.
STORAGE_DIR = "trials"
#: What is derived from a run: `analysis/<run>/` (leaderboard, report, export, bench results).
ANALYSIS_DIR = "analysis"
#: Token ids cached between searches, keyed by the data fingerprint and the tokenizer.
CACHE_DIR = ".cache/sentune"
