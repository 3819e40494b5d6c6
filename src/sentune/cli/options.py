"""What several commands share: the flags that override a space's settings, the runtime
options (declared once), the help texts of the common arguments, and `--set KEY=VALUE`."""

from __future__ import annotations

import argparse

from sentune import config

#: CLI flags that override a space file, by the dotted key they set.
#: Command-line flags that override a space's settings: flag (dest) → dotted key.
OVERRIDES = {
    "model": "model",
    "dataset": "data.dataset",
    "train_size": "data.train_size",
    "val_size": "data.val_size",
    "trials": "budget.trials",
    "max_epochs": "budget.max_epochs",
    "grace_period": "budget.grace_period",
    "evals_per_epoch": "budget.evals_per_epoch",
    "concurrency": "budget.concurrency",
    "cpus_per_trial": "budget.cpus_per_trial",
    "gpus_per_trial": "budget.gpus_per_trial",
    "time_budget_s": "budget.time_budget_s",
    "seed": "budget.seed",
    "confirm_top": "budget.confirm_top",
    "confirm_seeds": "budget.confirm_seeds",
}


def number_or_auto(text: str) -> float | str:
    """`--gpus-per-trial`, `--cpus-per-trial`: a number, or `auto`."""
    if text == config.GPUS_AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor {config.GPUS_AUTO}; e.g. 0.25, 1 or auto"
        ) from None


#: Type and help of each override flag, shared by `search` and `bench`.
OVERRIDE_HELP: dict[str, tuple[type, str]] = {
    "model": (str, "registered name (minilm, bert-base-uncased), hub id or folder"),
    "dataset": (str, "tweets, imdb, sst2, a hub dataset, a file or a folder"),
    "train_size": (int, "stratified subsample of the train split (data.train_size)"),
    "val_size": (int, "stratified subsample of the validation split (data.val_size)"),
    "max_length": (int, "tokens per text (train.max_length)"),
    "trials": (int, "trials to run (budget.trials)"),
    "max_epochs": (int, "epochs of a full trial (budget.max_epochs)"),
    "grace_period": (float, "epochs before ASHA may stop a trial (0.25: a quarter)"),
    "evals_per_epoch": (int, "evaluations per epoch; ASHA's rungs may fall between epochs"),
    "concurrency": (int, "trials running at once"),
    "cpus_per_trial": (
        number_or_auto,
        "CPUs reserved for each trial; auto: all of this host's, one trial at a time (GPU "
        "trials and clusters: 1)",
    ),
    "gpus_per_trial": (
        number_or_auto,
        "a fraction shares a GPU; auto: packed by the GPU's memory (the default)",
    ),
    "time_budget_s": (float, "stop the search after this long"),
    "seed": (int, "seed of the Optuna sampler"),
    "confirm_top": (
        int,
        "configurations retrained over seeds after the search (default "
        f"{config.CONFIRM_TOP_CPU} on CPU, {config.CONFIRM_TOP_GPU} with GPUs)",
    ),
    "confirm_seeds": (int, "seeds per confirmed configuration (0: no confirmation)"),
}


def add_overrides(parser: argparse.ArgumentParser, names) -> None:
    """Add the named override flags (and `set`: `--set KEY=VALUE`, repeatable) to a parser."""
    for name in names:
        if name == "set":
            parser.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="fix any dotted key, e.g. --set train.learning_rate=1e-4 (repeatable)",
            )
            continue
        kind, text = OVERRIDE_HELP[name]
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


STORAGE_HELP = (
    "the runs folder (one subfolder per run), or object storage: s3://bucket/prefix or another "
    "pyarrow filesystem URI (credentials from the environment: AWS_*, AWS_ENDPOINT_URL_S3)"
)
ANALYSIS_HELP = "the folder of derived results (analysis/<run>/)"
RUN_HELP = "a run name or trials/<run> folder (default: the latest finished run in --storage)"


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """`--precision` and `--device`, as `search` and `bench` take them."""
    parser.add_argument(
        "--precision",
        default=config.TrialSettings.precision,
        choices=config.PRECISIONS,
        help="auto: fp16/bf16 on GPUs, bf16 on CPUs with native bf16, else fp32",
    )
    parser.add_argument(
        "--device",
        default=config.TrialSettings.device,
        choices=config.DEVICES,
        help="where trials train",
    )


def add_tracking_options(parser: argparse.ArgumentParser) -> None:
    """`--log-to`, `--tracking-uri` and `--experiment`, as `search` and `export` take them."""
    parser.add_argument(
        "--log-to",
        action="append",
        type=tracker_names,
        default=[],
        metavar="TRACKER",
        help="also log to MLflow or W&B: mlflow, wandb, or mlflow,wandb (default: where the run "
        "logged, if it did: a resume or an export goes on logging there)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
        f"sqlite:///{config.MLFLOW_DIR}/{config.MLFLOW_DB} in this folder)",
    )
    parser.add_argument(
        "--experiment", help="MLflow experiment and W&B project (default: the space's name)"
    )


def tracker_names(text: str) -> tuple[str, ...]:
    """`--log-to`: tracker names, comma-separated."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in config.TRACKERS]
    if unknown or not names:
        both = ",".join(config.TRACKERS)
        raise argparse.ArgumentTypeError(
            f"{text!r}: log to {' or '.join(config.TRACKERS)}, or to both: {both}"
        )
    return names


def tracking_options(args: argparse.Namespace):
    """The `tracking.TrackingOptions` of a command's `add_tracking_options` flags."""
    from sentune.tracking import TrackingOptions

    log_to = tuple(dict.fromkeys(name for names in args.log_to for name in names))
    return TrackingOptions(
        log_to=log_to, tracking_uri=args.tracking_uri, experiment=args.experiment
    )


def parse_set(pairs: list[str]) -> dict:
    from sentune.errors import SpaceError
    from sentune.space import parse_yaml

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SpaceError(f"--set {pair!r}: write KEY=VALUE, e.g. --set head.dropout=0.2")
        values[key.strip()] = parse_yaml(text)
    return values
