"""Every default of sentune, in one place.

A search-space YAML and the CLI name fields of these dataclasses by dotted key
(`head.dropout`, `train.learning_rate`, `data.train_size`, `budget.trials`) and never
repeat a default. Metric names are constants here; the objective is written once.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

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
MODE = "max"


def metric_name(split: str, metric: str) -> str:
    """The one name of `metric` on `split`: `metric_name("val", MACRO_F1) == "val_macro_f1"`."""
    return f"{split}_{metric}"


#: The objective of every search (DESIGN.md contract): validation macro-F1, maximised.
VAL_MACRO_F1 = metric_name(VAL, MACRO_F1)
VAL_F1_WEIGHTED = metric_name(VAL, F1_WEIGHTED)
VAL_ACCURACY = metric_name(VAL, ACCURACY)
VAL_LOSS = metric_name(VAL, LOSS)
TRAIN_LOSS = metric_name(TRAIN, LOSS)
EPOCH = "epoch"
TRAIN_SAMPLES_PER_S = "train_samples_per_s"
#: Seconds from the command (`TrialSettings.started_at`) to a trial's first optimizer step, and
#: from the trial's own start to it (model load, data, compile): how long the hardware idled.
FIRST_STEP_S = "first_step_s"
TRIAL_SETUP_S = "trial_setup_s"
VAL_PRECISION_PREFIX = metric_name(VAL, PRECISION) + "/"
VAL_RECALL_PREFIX = metric_name(VAL, RECALL) + "/"
#: Optimizer steps taken, reported with each evaluation (the x axis of the trackers' curves).
STEP = "step"
#: Reported with each evaluation: the optimizer steps since the previous one, as `[step, loss,
#: learning rate]` rows (per-step curves for the trackers; `runs` leaves them out of the
#: histories). A row's loss and learning rate are logged as `LOSS` and `LEARNING_RATE`.
STEP_LOG = "steps"
LEARNING_RATE = "learning_rate"

#: Inference cost of a trial's model (`serve.engines.measure_latency`), reported beside its scores
#: from the first evaluation on when the search needs it: batch-1 latency (median, 95th
#: percentile), batch-32 throughput (texts/s) and the size of the measured model file.
LATENCY_P50_MS = "latency_p50_ms"
LATENCY_P95_MS = "latency_p95_ms"
THROUGHPUT_B32 = "throughput_b32"
MODEL_MB = "model_mb"
#: Each inference metric with the direction that is better (`min` or `max`).
INFERENCE_METRICS: dict[str, str] = {
    LATENCY_P50_MS: "min",
    LATENCY_P95_MS: "min",
    THROUGHPUT_B32: "max",
    MODEL_MB: "min",
}
#: Metrics a space may bound from above (`objective: {subject_to: {metric: limit}}`).
CONSTRAINT_METRICS = (LATENCY_P50_MS, LATENCY_P95_MS, MODEL_MB)
#: The metric `--max-latency-ms` bounds, and the one the Pareto front trades against macro-F1.
LATENCY_METRIC = LATENCY_P95_MS
#: How a trial's latency is measured: untimed calls, timed batch-1 calls, timed batch-32 calls.
#: A few seconds per trial on a CPU; the export measures longer (`ExportOptions`).
LATENCY_WARMUP = 3
LATENCY_RUNS = 30
LATENCY_BATCHES = 4
LATENCY_BATCH_SIZE = 32


@dataclass(frozen=True)
class Objective:
    """What a search optimises: validation macro-F1 alone, subject to upper bounds on inference
    metrics (constraint-aware TPE), or together with inference metrics (a Pareto search).

    ASHA stops trials on macro-F1 whatever the objective; a space writes
    `objective: {maximize: val_macro_f1, subject_to: {latency_p95_ms: 8}}` or
    `objectives: [val_macro_f1, latency_p95_ms]`.
    """

    #: The metrics optimised, `VAL_MACRO_F1` first; more than one makes a multi-objective study.
    metrics: tuple[str, ...] = (VAL_MACRO_F1,)
    #: Upper bounds by metric (`CONSTRAINT_METRICS`): a trial above one is infeasible.
    constraints: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        # A manifest read back from JSON gives a list.
        object.__setattr__(self, "metrics", tuple(self.metrics))

    @property
    def multi(self) -> bool:
        """Whether the study has several objectives (a Pareto search)."""
        return len(self.metrics) > 1

    @property
    def needs_latency(self) -> bool:
        """Whether the trials must measure their inference cost."""
        return self.multi or bool(self.constraints)

    def directions(self) -> list[str]:
        """`max`/`min` of each metric, in order (`MODE` for the objective)."""
        return [MODE if m == VAL_MACRO_F1 else INFERENCE_METRICS[m] for m in self.metrics]

    def budget_ms(self) -> float | None:
        """The p95 latency bound (`LATENCY_METRIC`), if the objective has one."""
        return self.constraints.get(LATENCY_METRIC)


POOLINGS = ("cls", "pooler", "mean")
ACTIVATIONS = ("gelu", "relu", "tanh")
#: How class imbalance is handled: loss weights (none/balanced/sqrt) or oversampling.
IMBALANCE = ("none", "balanced", "sqrt", "oversample")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
#: `train.max_length: auto` in a space file: the smallest multiple of `MAX_LENGTH_MULTIPLE` tokens
#: that covers the `MAX_LENGTH_QUANTILE` of the training texts' token lengths, capped at the
#: model's limit; `{quantiles: [...]}` under `search:` searches several such values.
MAX_LENGTH_AUTO = "auto"
#: `budget.gpus_per_trial: auto`: chosen from the GPU's memory when the search starts.
GPUS_AUTO = "auto"
#: `budget.cpus_per_trial: auto`: on a host's CPUs, one trial at a time on all of them (its first
#: evaluation comes about twice as early as two trials' sharing the cores, docs/benchmarks.md);
#: 1 for GPU trials and on a cluster.
CPUS_AUTO = "auto"
#: The numeric keys that also take `auto`.
AUTO_KEYS = ("train.max_length", "budget.gpus_per_trial", "budget.cpus_per_trial")
MAX_LENGTH_QUANTILE = 0.95
MAX_LENGTH_MULTIPLE = 32
#: A max_length that truncates more than this share of the training texts is warned about when a
#: search starts, and named as the likely cause when the TF-IDF floor beats the best trial.
TRUNCATION_WARN_SHARE = 0.2
#: Which tokens of a text longer than `train.max_length` are kept: the first ones (`head`), the
#: last ones (`tail`) or both ends (`head_tail`); see `batching.truncate`.
TRUNCATIONS = ("head", "tail", "head_tail")
#: How `train.compile` compiles (`torch.compile`'s `mode`): `reduce-overhead` adds CUDA graphs
#: (a step's kernels launched as one graph: the host no longer paces a small batch), `default`
#: does not; `auto` is `reduce-overhead` on CUDA and `default` elsewhere (CUDA graphs are CUDA's).
COMPILE_MODES = ("auto", "default", "reduce-overhead")
#: Optuna samplers a space (`sampler:`) or a strategy may name; TPE unless one is named.
SAMPLERS = ("tpe", "random", "qmc", "gp", "cmaes")


@dataclass(frozen=True)
class DataConfig:
    """Where the examples come from and how they are split. Fixed for a whole search."""

    #: `tweets` (embedded), a Hugging Face dataset, a local file or a folder of split files.
    dataset: str = "tweets"
    #: The text column; None means the source's known name (or `text`).
    text_column: str | None = None
    #: The label column; None means the source's known name (or `label`).
    label_column: str | None = None
    #: Stratified subsample of the training split (None: all of it); for CPU-sized runs.
    train_size: int | None = None
    #: Stratified subsample of the validation split (None: all of it).
    val_size: int | None = None
    #: Share of the source carved out for validation when it has no validation split.
    val_fraction: float = 0.1
    #: Share of the source carved out for test when it has no test split.
    test_fraction: float = 0.1
    #: Texts with fewer words are dropped when the data is cleaned.
    min_words: int = 3
    #: Seed of the split and the subsamples.
    seed: int = 0
    #: The size fields (`train_size`, `val_size`) that a space file gave: caps, so a smaller
    #: split is used whole; sizes from the command line are exact. Set by `space.load`, not by
    #: users (no dotted key), and left out of the data fingerprint.
    capped_sizes: tuple[str, ...] = field(default=(), metadata={"internal": True})

    def __post_init__(self):
        # A manifest read back from JSON gives a list.
        object.__setattr__(self, "capped_sizes", tuple(self.capped_sizes))


@dataclass(frozen=True)
class HeadConfig:
    """The classification head on top of the encoder."""

    #: The sentence vector: the [CLS] token, the encoder's pooler, or the mean of the tokens.
    pooling: str = "cls"
    #: Hidden layers between the pooled vector and the output layer (0-3).
    layers: int = 0
    #: Width of each hidden layer; None means the encoder's hidden size.
    width: int | None = None
    #: Activation of the head's hidden layers.
    activation: str = "gelu"
    #: Dropout before every linear layer of the head.
    dropout: float = 0.3


@dataclass(frozen=True)
class ModelConfig:
    """The shape of the encoder a trial fine-tunes (trades accuracy for inference speed)."""

    #: Keep the first k layers of the pretrained encoder (None: all of them; MiniLM has 6).
    encoder_layers: int | None = None


@dataclass(frozen=True)
class ServeConfig:
    """How the trained model is served; changes the measured latency, not the training."""

    #: Serve (and time) the int8-quantized ONNX model instead of the fp32 one (CPU only).
    int8: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe of one trial."""

    #: AdamW's peak learning rate.
    learning_rate: float = 5e-5
    #: AdamW's weight decay (never on biases and LayerNorm weights).
    weight_decay: float = 0.01
    #: Linear warmup over this share of all optimizer steps, then linear decay to zero.
    warmup_ratio: float = 0.1
    #: Examples per forward pass.
    batch_size: int = 32
    #: Examples per optimizer step; gradient accumulation makes up the difference.
    effective_batch_size: int = 32
    #: Tokens per text, special tokens included; longer texts are cut.
    max_length: int = 128
    #: Which tokens of a longer text are kept (`TRUNCATIONS`).
    truncation: str = "head"
    #: Class weights in the loss (balanced, sqrt), oversampling, or none.
    imbalance: str = "none"
    #: Gradient clipping norm.
    max_grad_norm: float = 1.0
    #: Evaluate every N optimizer steps as well as at each epoch's end (None: epochs only).
    eval_every_steps: int | None = None
    #: `torch.compile` the model (training and evaluation); batches are then padded to multiples
    #: of 32 tokens so that it recompiles a few times only. Pays off on GPUs; slow to start on CPU.
    compile: bool = False
    #: How `compile` compiles (`COMPILE_MODES`): `auto` uses CUDA graphs on GPUs.
    compile_mode: str = "auto"
    #: Seed of the head's initialisation, the batches and dropout.
    seed: int = 0


@dataclass(frozen=True)
class BudgetConfig:
    """How much searching to do and how ASHA cuts it short."""

    #: Configurations to try.
    trials: int = 8
    #: Epochs of a trial that is never stopped early.
    max_epochs: int = 3
    #: Evaluations per epoch: at 4, a trial reports validation macro-F1 after each quarter of
    #: an epoch, and ASHA's rungs may fall there (`grace_period` 0.25), so a poor trial stops
    #: after a quarter of an epoch; each evaluation costs a validation pass.
    evals_per_epoch: int = 1
    #: Epochs every trial runs before ASHA may stop it (a multiple of 1/evals_per_epoch).
    grace_period: float = 1.0
    #: ASHA keeps the best 1/reduction_factor of the trials at each rung.
    reduction_factor: int = 2
    #: Trials running at once (None: as many as the resources allow). CPU trials never run more
    #: at once than the host's memory holds (`gpus.resolve_cpu_concurrency`).
    concurrency: int | None = None
    #: CPUs reserved for each trial (also its torch threads). `auto`: on this host's CPUs, all of
    #: them (one trial at a time, every core on it); 1 for GPU trials and on a cluster
    #: (`resources.resolve_cpus_per_trial`).
    cpus_per_trial: float | str = "auto"
    #: GPUs reserved for each trial; a fraction shares a GPU. `auto`: as many trials per GPU as
    #: its memory holds (up to 8, see `gpus.gpu_packing`) on a host with a GPU, else 0.
    gpus_per_trial: float | str = "auto"
    #: Stop the whole search after this many seconds (None: no limit).
    time_budget_s: float | None = None
    #: Seed of the Optuna sampler.
    seed: int = 0
    #: Best configurations retrained over seeds after the search (None: 2 on CPU, 4 with GPUs).
    confirm_top: int | None = None
    #: Seeds per confirmed configuration; a search trial that trained the full budget counts as
    #: its own seed (0: no confirmation, the leaderboard's first trial wins).
    confirm_seeds: int = 2
    #: The first trial is the recipe: the defaults of this file for the searched keys (which
    #: follow the practitioner's guide; `MODEL_RECIPES` has the model's own), before the
    #: sampler draws (`space.start`).
    start_from_recipe: bool = True


#: `budget.confirm_top` left unset: configurations confirmed on CPU trials (each retraining costs
#: a full trial, one at a time on a small CPU host), and with GPU trials (cheap, and concurrent).
CONFIRM_TOP_CPU, CONFIRM_TOP_GPU = 2, 4


def confirm_top(budget: BudgetConfig) -> int:
    """The configurations confirmed over seeds: `budget.confirm_top`, else the hardware default
    (`CONFIRM_TOP_GPU` when trials get a GPU, `CONFIRM_TOP_CPU` otherwise)."""
    if budget.confirm_top is not None:
        return budget.confirm_top
    return CONFIRM_TOP_GPU if uses_gpus(budget) else CONFIRM_TOP_CPU


def uses_gpus(budget: BudgetConfig) -> bool:
    """Whether the trials get GPUs (`gpus_per_trial` still `auto` counts as no: a search resolves
    it before it runs, see `gpus.resolve_gpus_per_trial`)."""
    return not isinstance(budget.gpus_per_trial, str) and budget.gpus_per_trial > 0


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "head": HeadConfig,
    "train": TrainConfig,
    "serve": ServeConfig,
    "budget": BudgetConfig,
}
#: Sections a search may vary per trial; `data` and `budget` are fixed for a whole search.
TUNABLE_SECTIONS = ("model", "head", "train", "serve")

#: The recipe's values that differ by encoder, by registered model name (`encoders.MODELS`): the
#: dataclass defaults follow the guide's bert-base-uncased. A key a space neither searches nor
#: fixes takes the model's value, and so does the recipe start point (`space.start.recipe`).
#: MiniLM-L6 (hidden size 384) learns faster at 2e-4 than at bert-base's 5e-5: on 1000 training
#: texts at length 48 (3 epochs, batch 32), validation macro-F1 by epoch on the three-class tweets
#: 0.698/0.741/0.758 (1e-4: 0.655/0.731/0.749; 5e-5: 0.637/0.713/0.725) and on the binary ones
#: 0.821/0.836/0.867 (1e-4: 0.814/0.841/0.851; 5e-5: 0.827 at best); docs/benchmarks.md.
MODEL_RECIPES: dict[str, dict[str, Any]] = {
    "minilm": {"train.learning_rate": 2e-4},
}


def recipe_value(key: str, model: str) -> Any:
    """The recipe's value of dotted `key` for `model`: its `MODEL_RECIPES` entry, else the
    dataclass default."""
    own = MODEL_RECIPES.get(model, {})
    if key in own:
        return own[key]
    section, name = key.split(".", 1)
    return getattr(SECTIONS[section](), name)


def dotted_keys(section: str | None = None) -> list[str]:
    """All dotted keys (`head.dropout`, …), optionally of one section; internal fields have none."""
    names = [section] if section else list(SECTIONS)
    return [
        f"{name}.{f.name}"
        for name in names
        for f in fields(SECTIONS[name])
        if not f.metadata.get("internal")
    ]


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
        evals_per_epoch: Evaluations per epoch (`BudgetConfig.evals_per_epoch`), reported at
            nominal parts of an epoch (0.25, 0.5, …).
        precision: `auto` (fp16/bf16 on CUDA, bf16 on CPUs with native bf16, else fp32) or explicit.
        device: `auto`, `cpu` or `cuda`.
        num_threads: torch intra-op threads on CPU (None: leave torch's default).
        checkpoint_dir: Where the trial writes its checkpoints before handing them to `report`
            (None: a `scratch` folder, removed by a later sweep once this process has ended).
        resumable: Hand `report` a checkpoint at every evaluation, with the training state
            (optimizer, scheduler, RNGs) beside the weights, so that the trial can continue from
            its latest one; otherwise only the best evaluation's weights are saved.
        measure_latency: Measure the model's inference cost once (`serve.engines.measure_latency`)
            and report it with every evaluation (`INFERENCE_METRICS`); only searches whose
            objective needs it pay for it.
        gpus_per_trial: The share of a GPU the trial has (below 1: it shares the GPU with
            other trials); an out-of-memory error then says to lower the packing.
        started_at: When the command started (`time.time()`), to report the seconds to the
            first training step (`FIRST_STEP_S`); None leaves that metric out.
    """

    model: str = "minilm"
    max_epochs: int = BudgetConfig.max_epochs
    evals_per_epoch: int = BudgetConfig.evals_per_epoch
    precision: str = "auto"
    device: str = "auto"
    num_threads: int | None = None
    checkpoint_dir: str | None = None
    resumable: bool = False
    measure_latency: bool = False
    gpus_per_trial: float = 0.0
    started_at: float | None = None


#: Allowed values of the string-valued fields.
CHOICES: dict[str, tuple[str, ...]] = {
    "head.pooling": POOLINGS,
    "head.activation": ACTIVATIONS,
    "train.imbalance": IMBALANCE,
    "train.truncation": TRUNCATIONS,
    "train.compile_mode": COMPILE_MODES,
}
#: Inclusive numeric bounds of fields (None: unbounded on that side).
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "data.train_size": (1, None),
    "data.val_size": (1, None),
    "data.val_fraction": (0.01, 0.5),
    "data.test_fraction": (0.01, 0.5),
    "data.min_words": (0, None),
    "model.encoder_layers": (1, None),
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
    "budget.evals_per_epoch": (1, 16),
    "budget.grace_period": (0.0625, None),
    "budget.reduction_factor": (2, None),
    "budget.concurrency": (1, None),
    "budget.cpus_per_trial": (0.1, None),
    "budget.gpus_per_trial": (0.0, None),
    "budget.time_budget_s": (1, None),
    "budget.confirm_top": (1, None),
    "budget.confirm_seeds": (0, None),
}

# --- where things are written (the CLI's defaults; each option dataclass points here) -------
#: Ray Tune's storage: one folder per run.
STORAGE_DIR = "trials"
#: What is derived from a run: `analysis/<run>/` (leaderboard, report, export, bench results).
ANALYSIS_DIR = "analysis"
#: Token ids cached between searches, keyed by the data fingerprint and the tokenizer.
CACHE_DIR = ".cache/sentune"
#: Retries of a failed trial (from its latest checkpoint) before it is recorded as errored.
MAX_FAILURES = 1
#: How often a trial's worker writes where it stands inside its epoch (`progress.ProgressFile`),
#: and how long a trial goes without a terminal line before the search says where it stands
#: (`SearchProgress.on_progress`): an epoch shorter than that prints no more than before.
PROGRESS_WRITE_EVERY_S = 10.0
PROGRESS_LINE_EVERY_S = 60.0
#: Where the Ray dashboard listens: loopback; users tunnel to it.
DASHBOARD_HOST = "127.0.0.1"
#: Where `sentune dashboard` (optuna-dashboard on the run's journal) listens; same host.
OPTUNA_DASHBOARD_PORT = 8080
#: How long `--address` is checked before Ray is joined: the TCP connect to the head, then its
#: answer to one unauthenticated-or-not GCS call (Ray itself retries for about 20 s).
ADDRESS_TIMEOUT_S = 2.0
#: Under `CACHE_DIR`: the local mirror of runs kept in object storage (`--storage s3://…`),
#: one folder per scheme, bucket and prefix.
MIRROR_DIR = "storage"
#: `--log-to`: the tracking servers a search and its export log to (`sentune.tracking`).
TRACKERS = ("mlflow", "wandb")
#: MLflow's store where neither `--tracking-uri` nor MLFLOW_TRACKING_URI names one: a SQLite file
#: (MLflow's file store is deprecated) in this folder of the current directory, the artifacts
#: beside it; never a remote server.
MLFLOW_DIR = "mlruns"
MLFLOW_DB = "mlflow.db"
#: Seconds a tracking server has to answer the check when a command starts (a server that is
#: down costs the search this once, then is left alone), and each write after it.
TRACKING_CHECK_TIMEOUT_S = 5
TRACKING_WRITE_TIMEOUT_S = 10


def outside_limits(key: str, value: float) -> str | None:
    """Why `value` is outside the `LIMITS` of `key` (e.g. "0.99 is outside [0.0, 0.95]"), or None.

    The one bounds check: space files, the CLI and the model's own config all ask it.
    """
    low, high = LIMITS.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        return f"{value!r} is outside {bounds}"
    return None


# --- the keys, described (`sentune keys`, docs/keys.md) ----------------------------------


class KeyRow(NamedTuple):
    """One dotted key: its type, default, allowed values or limits, and its field comment."""

    key: str
    type: str
    default: str
    allowed: str
    doc: str


def describe_keys() -> list[KeyRow]:
    """Every dotted key of the sections, in declaration order, described from this module.

    The description is each field's `#:` comment in the dataclass source, so docs/keys.md's table
    (generated from this) cannot drift from the code.
    """
    rows = []
    for section, cls in SECTIONS.items():
        docs = _field_comments(cls)
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            key = f"{section}.{f.name}"
            rows.append(
                KeyRow(key, str(f.type), repr(f.default), _allowed(key), docs.get(f.name, ""))
            )
    return rows


def keys_table() -> str:
    """`describe_keys()` as a Markdown table (what `sentune keys` prints and docs/keys.md holds)."""
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for row in describe_keys():
        cells = [f"`{row.key}`", f"`{row.type}`", f"`{row.default}`", row.allowed, row.doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _allowed(key: str) -> str:
    if key in CHOICES:
        return ", ".join(CHOICES[key])
    if field_type(key) == "bool":
        return "true, false"
    low, high = LIMITS.get(key, (None, None))
    auto = f", or {GPUS_AUTO}" if key in AUTO_KEYS else ""
    if low is None and high is None:
        return auto.removeprefix(", or ")
    if high is None:
        return f"≥ {low:g}{auto}"
    return (f"{low:g} to {high:g}" if low is not None else f"≤ {high:g}") + auto


def _field_comments(cls: type) -> dict[str, str]:
    """The `#:` comment lines right above each field of a dataclass, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments
