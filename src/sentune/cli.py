"""`sentune search|leaderboard`: the command line. `SentuneError` becomes one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sentune.errors import SentuneError

log = logging.getLogger("sentune")

#: CLI flags that override a space file, by the dotted key they set.
_OVERRIDES = {
    "model": "model",
    "dataset": "data.dataset",
    "train_size": "data.train_size",
    "val_size": "data.val_size",
    "trials": "budget.trials",
    "max_epochs": "budget.max_epochs",
    "grace_period": "budget.grace_period",
    "concurrency": "budget.concurrency",
    "cpus_per_trial": "budget.cpus_per_trial",
    "gpus_per_trial": "budget.gpus_per_trial",
    "time_budget_s": "budget.time_budget_s",
    "seed": "budget.seed",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sentune` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except SentuneError as exc:
        print(f"sentune: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentune", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    search = commands.add_parser("search", help="run a search over a space")
    search.add_argument("space", help="a name in search_spaces/ (e.g. heads) or a YAML path")
    search.add_argument(
        "--model", help="registered name (minilm, bert-base-uncased), hub id or folder"
    )
    search.add_argument("--dataset", help="tweets, imdb, sst2, a hub dataset, a file or a folder")
    search.add_argument("--train-size", type=int, help="stratified subsample of the train split")
    search.add_argument("--val-size", type=int, help="stratified subsample of the validation split")
    search.add_argument("--trials", type=int)
    search.add_argument("--max-epochs", type=int)
    search.add_argument("--grace-period", type=int, help="epochs before ASHA may stop a trial")
    search.add_argument("--concurrency", type=int, help="trials running at once")
    search.add_argument("--cpus-per-trial", type=float)
    search.add_argument("--gpus-per-trial", type=float, help="a fraction shares a GPU")
    search.add_argument("--time-budget-s", type=float, help="stop the search after this long")
    search.add_argument("--seed", type=int, help="seed of the Optuna sampler")
    search.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix any dotted key, e.g. --set train.learning_rate=1e-4 (repeatable)",
    )
    search.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    search.add_argument(
        "--strategy",
        default="tpe-asha",
        help="tpe-asha (default), random-asha, tpe-fifo, random-fifo",
    )
    search.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    search.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    search.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    search.add_argument("--dashboard-port", type=int)
    search.add_argument("--storage", type=Path, default=Path("trials"), help="runs folder")
    search.add_argument("--analysis", type=Path, default=Path("analysis"), help="derived folder")
    search.set_defaults(func=_search)

    board = commands.add_parser("leaderboard", help="print and save the leaderboard of a run")
    board.add_argument("run", type=Path, nargs="?", help="trials/<run> (default: the latest)")
    board.add_argument("--storage", type=Path, default=Path("trials"))
    board.add_argument("--analysis", type=Path, default=Path("analysis"))
    board.set_defaults(func=_leaderboard)
    return parser


def _search(args: argparse.Namespace) -> int:
    import os

    from sentune import search, space

    overrides = {
        key: getattr(args, flag)
        for flag, key in _OVERRIDES.items()
        if getattr(args, flag) is not None
    }
    overrides.update(_parse_set(args.set))
    spec = space.load(args.space, overrides=overrides)
    options = search.SearchOptions(
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        storage=args.storage,
        precision=args.precision,
        device=args.device,
        dashboard=not args.no_dashboard,
        dashboard_port=args.dashboard_port,
        strategy=args.strategy,
    )
    run_dir = search.run(spec, options=options)
    _show_leaderboard(run_dir, args.analysis)
    return 0


def _parse_set(pairs: list[str]) -> dict:
    from sentune.errors import SpaceError
    from sentune.space import parse_yaml

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SpaceError(f"--set {pair!r}: write KEY=VALUE, e.g. --set head.dropout=0.2")
        values[key.strip()] = parse_yaml(text)
    return values


def _leaderboard(args: argparse.Namespace) -> int:
    run_dir = args.run or _latest_run(args.storage)
    _show_leaderboard(run_dir, args.analysis)
    return 0


def _latest_run(storage: Path) -> Path:
    from sentune.errors import RunError
    from sentune.search import MANIFEST

    runs = sorted(
        (p for p in storage.glob("*/") if (p / MANIFEST).is_file()),
        key=lambda p: (p / MANIFEST).stat().st_mtime,
    )
    if not runs:
        raise RunError(f"no runs in {storage}/; run `make search SPACE=heads` first")
    return runs[-1]


def _show_leaderboard(run_dir: Path, analysis_root: Path) -> None:
    import pandas as pd

    from sentune import analysis, config

    run = analysis.load_run(run_dir)
    table = analysis.leaderboard(run)
    out = analysis_root / Path(run_dir).name
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "leaderboard.csv.tmp"
    table.to_csv(tmp, index=False)
    tmp.replace(out / "leaderboard.csv")
    shown = table.drop(columns=["checkpoint", "error", config.VAL_LOSS])
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(f"\nLeaderboard of {run_dir} (best epoch's {config.OBJECTIVE}):")
        print(shown.to_string(index=False))
    stopped = int(table["stopped_early"].sum())
    print(
        f"\n{len(table)} trials, {stopped} stopped early by ASHA, "
        f"{int((table['status'] == 'error').sum())} failed"
    )
    print(f"leaderboard: {out / 'leaderboard.csv'}")


if __name__ == "__main__":
    sys.exit(main())
