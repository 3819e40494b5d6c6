"""`sentune search|leaderboard|report|dashboard|export|predict|bench|keys`: the command line.

A `SentuneError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import metadata
from pathlib import Path

from sentune import config
from sentune.errors import SentuneError

log = logging.getLogger("sentune")

#: CLI flags that override a space file, by the dotted key they set.
#: Command-line flags that override a space's settings: flag (dest) → dotted key.
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
    "confirm_top": "budget.confirm_top",
    "confirm_seeds": "budget.confirm_seeds",
}


def _gpus_per_trial(text: str) -> float | str:
    """`--gpus-per-trial`: a number, or `auto`."""
    if text == config.GPUS_AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor {config.GPUS_AUTO}; e.g. 0.25, 1 or auto"
        ) from None


#: Type and help of each override flag, shared by `search` and `bench`.
_OVERRIDE_HELP: dict[str, tuple[type, str]] = {
    "model": (str, "registered name (minilm, bert-base-uncased), hub id or folder"),
    "dataset": (str, "tweets, imdb, sst2, a hub dataset, a file or a folder"),
    "train_size": (int, "stratified subsample of the train split (data.train_size)"),
    "val_size": (int, "stratified subsample of the validation split (data.val_size)"),
    "max_length": (int, "tokens per text (train.max_length)"),
    "trials": (int, "trials to run (budget.trials)"),
    "max_epochs": (int, "epochs of a full trial (budget.max_epochs)"),
    "grace_period": (int, "epochs before ASHA may stop a trial"),
    "concurrency": (int, "trials running at once"),
    "cpus_per_trial": (float, "CPUs reserved for each trial"),
    "gpus_per_trial": (
        _gpus_per_trial,
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


def _add_overrides(parser: argparse.ArgumentParser, names) -> None:
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
        kind, text = _OVERRIDE_HELP[name]
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


_DESCRIPTION = """\
Hyperparameter search for fine-tuning BERT-family sentiment classifiers: Ray Tune runs the
trials, Optuna proposes configurations, ASHA stops weak trials early on validation macro-F1.

commands:
  search       run a search space (search_spaces/<name>.yaml); start with `sentune search smoke`
  leaderboard  print and save a run's leaderboard (default: the latest finished run)
  report       write a run's one-file HTML report (importance, curves, TF-IDF floor, confusion)
  dashboard    watch a run's Optuna study live in optuna-dashboard (default: the latest run)
  export       export a run's winner: Hugging Face folder, ONNX, int8; test scores, model card
  predict      classify texts or a CSV/TSV/JSONL file with an export (onnxruntime, no torch)
  bench        compare search strategies against each other and Trainer.hyperparameter_search
  keys         list every dotted key a space or --set can name, with its default

`sentune COMMAND -h` explains a command's options.
"""
_STORAGE_HELP = (
    "the runs folder (one subfolder per run), or object storage: s3://bucket/prefix or another "
    "pyarrow filesystem URI (credentials from the environment: AWS_*, AWS_ENDPOINT_URL_S3)"
)
_ANALYSIS_HELP = "the folder of derived results (analysis/<run>/)"
_RUN_HELP = "a run name or trials/<run> folder (default: the latest finished run in --storage)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sentune` console script."""
    started_at = time.time()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    args.started_at = started_at
    # argparse leaves TEXT arguments that follow an option unparsed (`predict DIR --int8 "hi"`).
    if (
        extra
        and getattr(args, "texts", None) is not None
        and not any(e.startswith("-") for e in extra)
    ):
        args.texts += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
    except KeyboardInterrupt:
        # An interrupted search has already logged how to resume it.
        print("sentune: interrupted", file=sys.stderr)
        return 130


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and shows each option's default, unless it has none or
    its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default" in help_text
            or default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return help_text
        return f"{help_text} (default: %(default)s)"


def _version() -> str:
    try:
        return metadata.version("sentune")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentune",
        usage="%(prog)s [-h] [-v] [--version] COMMAND ...",
        description=_DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # The description lists the commands in words; argparse's own list would repeat it.
    commands = parser.add_subparsers(required=True, metavar="COMMAND", help=argparse.SUPPRESS)

    search = commands.add_parser("search", help="run a search over a space")
    search.add_argument(
        "space",
        nargs="?",
        help="a name in search_spaces/ (e.g. heads) or a YAML path (with --resume: optional)",
    )
    search.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the interrupted search in trials/<run> or run RUN of --storage (space "
        "and budget from its manifest)",
    )
    search.add_argument(
        "--name",
        help="name the run folder <storage>/NAME (default: <space>-<timestamp>); must be new",
    )
    search.add_argument(
        "--max-failures",
        type=int,
        default=config.MAX_FAILURES,
        help="retries of a failed trial from its last checkpoint before it counts as errored",
    )
    _add_overrides(search, (*_OVERRIDES, "set"))
    search.add_argument(
        "--max-latency-ms",
        type=float,
        help="bound the p95 batch-1 latency of the trials' models (sets or replaces the space's "
        "latency_p95_ms bound; trials measure their latency)",
    )
    search.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    search.add_argument(
        "--strategy",
        help="SAMPLER-SCHEDULER: tpe|random|qmc|gp|cmaes with asha|fifo (default: the "
        "space's sampler, TPE unless it names one, with asha)",
    )
    search.add_argument(
        "--precision",
        default=config.TrialSettings.precision,
        choices=config.PRECISIONS,
        help="auto: fp16/bf16 on GPUs, bf16 on CPUs with native bf16, else fp32",
    )
    search.add_argument(
        "--device",
        default=config.TrialSettings.device,
        choices=config.DEVICES,
        help="where trials train",
    )
    search.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each trial's model (train.compile: true); pays off on GPUs",
    )
    search.add_argument(
        "--mps",
        action="store_true",
        help="run packed GPU trials under CUDA MPS (starts nvidia-cuda-mps-control; unmeasured)",
    )
    search.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    search.add_argument(
        "--dashboard-host",
        default=config.DASHBOARD_HOST,
        help="address the dashboard listens on (keep loopback and tunnel to it)",
    )
    search.add_argument("--dashboard-port", type=int, help="dashboard port (default: Ray's, 8265)")
    search.add_argument("--storage", default=config.STORAGE_DIR, help=_STORAGE_HELP)
    search.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=_ANALYSIS_HELP
    )
    search.set_defaults(func=_search)

    board = commands.add_parser("leaderboard", help="print and save the leaderboard of a run")
    board.add_argument("run", nargs="?", help=_RUN_HELP)
    board.add_argument("--storage", default=config.STORAGE_DIR, help=_STORAGE_HELP)
    board.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=_ANALYSIS_HELP
    )
    board.set_defaults(func=_leaderboard)

    report = commands.add_parser(
        "report", help="write analysis/<run>/report.html (leaderboard, importance, curves, …)"
    )
    report.add_argument("run", nargs="?", help=_RUN_HELP)
    report.add_argument("--storage", default=config.STORAGE_DIR, help=_STORAGE_HELP)
    report.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=_ANALYSIS_HELP
    )
    report.add_argument(
        "--screenshot", action="store_true", help="also save report.png (needs Chromium)"
    )
    report.set_defaults(func=_report)
    _add_dashboard_parser(commands)
    _add_export_parsers(commands)
    _add_bench_parser(commands)
    keys = commands.add_parser("keys", help="list the dotted keys of search spaces and --set")
    keys.set_defaults(func=_keys)
    for command in commands.choices.values():
        command.formatter_class = _HelpFormatter
        # Also after the subcommand (`sentune search heads -v`); SUPPRESS keeps the top-level
        # flag's value when this one is not given.
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
    return parser


def _keys(args: argparse.Namespace) -> int:
    print(config.keys_table())
    return 0


def _search(args: argparse.Namespace) -> int:
    import os

    from sentune import search, space
    from sentune.errors import SpaceError

    overrides = {
        key: getattr(args, flag)
        for flag, key in _OVERRIDES.items()
        if getattr(args, flag) is not None
    }
    if args.compile:
        overrides["train.compile"] = True
    overrides.update(_parse_set(args.set))
    options = search.SearchOptions(
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        storage=args.storage,
        precision=args.precision,
        device=args.device,
        dashboard=not args.no_dashboard,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        strategy=args.strategy,
        max_failures=args.max_failures,
        verbose=args.verbose,
        name=args.name,
        mps=args.mps,
        started_at=getattr(args, "started_at", None),
    )
    if args.resume is not None:
        # A bare run name works too; a run in object storage is pulled into its mirror.
        args.resume = _resolve_run(str(args.resume), args.storage, cache_dir=options.cache_dir)
        _check_resume_args(args, overrides)
        run_dir = search.resume(args.resume, options=options)
    else:
        if args.space is None:
            raise SpaceError("name a space (e.g. `sentune search heads`) or pass --resume RUN")
        spec = space.load(args.space, overrides=overrides, max_latency_ms=args.max_latency_ms)
        run_dir = search.run(spec, options=options)
    analysed = time.perf_counter()
    _show_leaderboard(run_dir, args.analysis)
    try:
        _write_report(run_dir, args.analysis)
    except Exception as exc:  # noqa: BLE001 - the search is done; a report failure must not lose it
        log.error("the report of %s failed (%s: %s)", run_dir, type(exc).__name__, exc)
        log.error("retry with: make report RUN=%s", run_dir)
    log.info(
        "leaderboard and report written in %.1fs (the search itself ended before)",
        time.perf_counter() - analysed,
    )
    return 0


def _check_resume_args(args: argparse.Namespace, overrides: dict) -> None:
    """A resumed search is the search that was started: its space and budget cannot change."""
    from sentune.errors import RunError
    from sentune.runs import read_manifest

    manifest = read_manifest(args.resume)
    name = manifest.space.name
    if args.space is not None and args.space not in (name, manifest.space.path):
        raise RunError(
            f"{args.resume} is a run of space {name!r}, not {args.space!r}; drop the space "
            f"or pass {name}"
        )
    changed = sorted(overrides) + [
        flag
        for flag, changed in (
            ("strategy", args.strategy is not None),
            ("precision", args.precision != config.TrialSettings.precision),
            ("device", args.device != config.TrialSettings.device),
            ("name", args.name is not None),
            ("max-latency-ms", args.max_latency_ms is not None),
        )
        if changed
    ]
    if changed:
        raise RunError(
            f"--resume continues {args.resume} as it was started; drop the overrides "
            f"({', '.join(changed)}) or start a new search"
        )


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
    run_dir = _resolve_run(args.run, args.storage)
    _show_leaderboard(run_dir, args.analysis)
    return 0


def _report(args: argparse.Namespace) -> int:
    run_dir = _resolve_run(args.run, args.storage)
    _write_report(run_dir, args.analysis, screenshot=args.screenshot)
    return 0


def _add_dashboard_parser(commands) -> None:
    dashboard = commands.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a run's study, while the search runs and after",
    )
    dashboard.add_argument(
        "run",
        nargs="?",
        help="a run name or trials/<run> folder (default: the latest run in --storage, "
        "finished or not)",
    )
    dashboard.add_argument(
        "--host",
        default=config.DASHBOARD_HOST,
        help="loopback address to listen on (no other: the dashboard has no authentication; "
        "tunnel to it)",
    )
    dashboard.add_argument(
        "--port",
        type=int,
        default=config.OPTUNA_DASHBOARD_PORT,
        help="port to listen on; 0 picks a free one",
    )
    dashboard.add_argument("--storage", default=config.STORAGE_DIR, help=_STORAGE_HELP)
    dashboard.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from sentune.report import dashboard

    # A live view wants the search that is running now, which is not finished yet.
    run_dir = _resolve_run(args.run, args.storage, finished=False)
    server = dashboard.make_dashboard_server(run_dir, host=args.host, port=args.port)
    print(f"Optuna dashboard of {run_dir}: {dashboard.url(server)}")
    print("Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # the way to stop it
    finally:
        server.server_close()
    return 0


def _write_report(run_dir: Path, analysis_root: Path, *, screenshot: bool = False) -> Path:
    """Analyse a run, write its tables and report.html, and print the summary."""
    from sentune import analysis, report
    from sentune.report import browser

    log.info("analysing %s (importance, TF-IDF floor, the winner on validation)", run_dir)
    result = analysis.analyze(run_dir)
    out = analysis_root / Path(run_dir).name
    analysis.write_tables(result, out)
    path = report.write_report(result, out)
    if screenshot:
        log.info("screenshot: %s", browser.screenshot(path, out / analysis.SCREENSHOT_FILE))
    print("\n" + report.summary(result, report=path))
    return path


def _resolve_run(
    run: str | None, location: str, *, finished: bool = True, cache_dir=config.CACHE_DIR
) -> Path:
    """The local folder of the run a command names (a path or a bare name), or of the latest
    (finished) one, said aloud; a run in object storage is pulled into its mirror first."""
    from sentune.runs import storage

    store = storage.open_storage(location, cache_dir=cache_dir)
    run_dir = storage.resolve_run(run, store, finished=finished)
    if run is None:
        which = "latest finished run" if finished else "latest run"
        print(f"using {run_dir} ({which})", file=sys.stderr)
    return run_dir


def _show_leaderboard(run_dir: Path, analysis_root: Path) -> None:
    import pandas as pd

    from sentune import analysis, runs

    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    out = analysis_root / Path(run_dir).name
    out.mkdir(parents=True, exist_ok=True)
    runs.write_csv(table, out / analysis.LEADERBOARD_FILE)
    shown = table.drop(columns=["checkpoint", "error", config.VAL_LOSS])
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(f"\nLeaderboard of {run_dir} (best epoch's {config.OBJECTIVE}):")
        print(analysis.RANKING_RULE)
        print(shown.to_string(index=False))
    stopped = int(table["stopped_early"].sum())
    print(
        f"\n{len(table)} trials, {stopped} stopped early by ASHA, "
        f"{int((table['status'] == analysis.ERROR).sum())} failed"
    )
    for _, row in table[table["status"] == analysis.ERROR].iterrows():
        print(f"  {row['trial_id']} failed: {row['error']}")
    print(f"leaderboard: {out / analysis.LEADERBOARD_FILE}")
    confirmed = analysis.confirmation(run, table)
    if confirmed is not None:
        runs.write_csv(confirmed.table, out / analysis.CONFIRM_FILE)
        print("\nConfirmation over seeds (best mean first; the winner is the first):")
        print(confirmed.configs.to_string(index=False, float_format="{:.4f}".format))
        print(f"confirmation: {out / analysis.CONFIRM_FILE}")


def _add_export_parsers(commands) -> None:
    from sentune.serve.predict import OUTPUT_FORMATS

    export = commands.add_parser(
        "export", help="export a run's winner: HF folder, ONNX, int8; test scores, benchmark"
    )
    export.add_argument("run", nargs="?", help=_RUN_HELP)
    export.add_argument("--trial", help="export this trial id instead of the leaderboard's best")
    export.add_argument(
        "--formats",
        default="hf,onnx,int8",
        help="comma-separated subset of hf,onnx,int8,pt2 (default: hf,onnx,int8)",
    )
    export.add_argument("--quantize", choices=("int8",), help="add the int8 model to --formats")
    export.add_argument("--force", action="store_true", help="replace an existing export")
    export.add_argument(
        "--max-latency-ms",
        type=float,
        help="export the best trial on the F1-latency Pareto front whose p95 batch-1 latency "
        "meets this budget; refuse when none does or the exported model misses it",
    )
    export.add_argument("--threads", type=int, help="intra-op threads (default: CPU count)")
    export.add_argument("--out", type=Path, help="export folder (default: ANALYSIS/<run>/export)")
    export.add_argument("--storage", default=config.STORAGE_DIR, help=_STORAGE_HELP)
    export.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=_ANALYSIS_HELP
    )
    export.add_argument(
        "--cache-dir", type=Path, default=Path(config.CACHE_DIR), help="the token id cache"
    )
    export.set_defaults(func=_export)

    predict = commands.add_parser("predict", help="classify texts with an export (onnxruntime)")
    predict.add_argument("export_dir", type=Path, help="analysis/<run>/export")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    predict.add_argument(
        "--file",
        help="a CSV, TSV or JSONL file of texts, or - for stdin; every column is kept and the "
        "prediction appended (label, p_<label> per class)",
    )
    predict.add_argument("--column", default="text", help="the text column of --file")
    predict.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        help="output format (default: table on a terminal, csv when piped)",
    )
    predict.add_argument(
        "--skip-empty",
        action="store_true",
        help="leave rows with an empty text unlabelled instead of failing",
    )
    predict.add_argument("--int8", action="store_true", help="use the int8 model")
    predict.add_argument("--batch-size", type=int, default=32, help="texts per onnxruntime call")
    predict.add_argument("--threads", type=int, help="intra-op threads (default: CPU count)")
    predict.set_defaults(func=_predict)


def _export(args: argparse.Namespace) -> int:
    from sentune import export

    formats = [f for f in args.formats.split(",") if f.strip()]
    if args.quantize and args.quantize not in formats:
        formats.append(args.quantize)
    options = export.ExportOptions(
        trial=args.trial,
        formats=tuple(formats),
        force=args.force,
        threads=args.threads,
        cache_dir=args.cache_dir,
        max_latency_ms=args.max_latency_ms,
    )
    run_dir = _resolve_run(args.run, args.storage, cache_dir=args.cache_dir)
    result = export.export_winner(
        run_dir, out_dir=args.out, analysis_root=args.analysis, options=options
    )
    metrics = result.metrics
    print(f"\nExported trial {result.winner.trial_id} of {run_dir} to {result.path}")
    print(f"\nScores (test split never seen by the search):\n{export.format_scores(metrics)}")
    print(f"\nTest scores with 95 % bootstrap intervals:\n{export.format_intervals(metrics)}")
    if "int8_test_macro_f1_drop" in metrics:
        test_f1 = config.metric_name(config.TEST, config.MACRO_F1)
        test = {name: f["test"][test_f1] for name, f in metrics["formats"].items()}
        print(
            f"int8 quantization: test macro-F1 {test['int8']:.4f} vs {test['pytorch']:.4f} in "
            f"PyTorch (drop {metrics['int8_test_macro_f1_drop']:.4f})"
        )
    bench = result.benchmark
    print(
        f"\nBenchmark ({bench['threads']} threads; tokenization {bench['tokenization']}):\n"
        f"{export.format_benchmark(bench)}"
    )
    if "budget" in bench:
        met = bench["budget"]
        before = met["search_p95_ms"]
        print(
            f"\nLatency budget {met['max_latency_ms']:g} ms met: {met['engine']} p95 "
            f"{met['p95_ms']:.2f} ms re-measured, {met['threads']} threads "
            f"({'n/a' if before is None else f'{before:.2f} ms'} in the search)"
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from sentune.errors import ExportError
    from sentune.serve import predict

    if bool(args.file) == bool(args.texts):
        raise ExportError("sentune predict: give TEXT arguments or --file FILE (not both)")
    fmt = args.format or ("table" if sys.stdout.isatty() else "csv")
    predictor = predict.Predictor(args.export_dir, int8=args.int8, threads=args.threads)
    if args.file:
        source = "stdin" if args.file == "-" else args.file
        table, column = predict.read_table(args.file), args.column
    else:
        source, column = "TEXT", "text"
        table = predict.Table([column], [{column: text} for text in args.texts])
    result = predict.predict_table(
        predictor,
        table,
        column,
        source=source,
        skip_empty=args.skip_empty,
        batch_size=args.batch_size,
    )
    predict.write_table(result, sys.stdout, fmt=fmt)
    return 0


def _add_bench_parser(commands) -> None:
    from sentune.bench import CPU_SIZES, DEFAULT_METHODS, METHODS

    bench = commands.add_parser(
        "bench",
        help="search strategies against each other and against Trainer.hyperparameter_search",
        description="Every method searches the same space for the same wall-clock budget, once "
        "per seed; writes analysis/bench/<timestamp>/ (results.csv, curves.csv, summary.md, "
        "bench.html). Without GPUs the data is CPU-sized by default (--size cpu: "
        + ", ".join(f"{k}={v}" for k, v in CPU_SIZES.items())
        + ").",
    )
    bench.add_argument("--space", default="optim", help="a space name or YAML path (default optim)")
    bench.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, of {', '.join(METHODS)} (default: %(default)s)",
    )
    bench.add_argument("--repeats", type=int, default=2, help="seeds 0..N-1 (default 2)")
    bench.add_argument("--seeds", help="comma-separated seeds (instead of --repeats)")
    bench.add_argument(
        "--budget-minutes", type=float, default=3.5, help="wall clock per search (default 3.5)"
    )
    bench.add_argument("--target", type=float, help="macro-F1 to reach (default: the peer's best)")
    bench.add_argument(
        "--size",
        choices=("cpu", "space"),
        help="cpu: CPU-sized data and length; space: the space's own (default: cpu unless "
        "--gpus-per-trial > 0)",
    )
    _add_overrides(
        bench,
        ("model", "dataset", "train_size", "val_size", "max_length", "max_epochs",
         "concurrency", "cpus_per_trial", "gpus_per_trial", "set"),
    )  # fmt: skip
    bench.add_argument("--peer-threads", type=int, help="torch threads of the peer (default: all)")
    bench.add_argument(
        "--precision",
        default=config.TrialSettings.precision,
        choices=config.PRECISIONS,
        help="as for search",
    )
    bench.add_argument(
        "--device",
        default=config.TrialSettings.device,
        choices=config.DEVICES,
        help="where trials train",
    )
    bench.add_argument("--no-throughput", action="store_true", help="skip the throughput part")
    bench.add_argument(
        "--storage", type=Path, default=Path(config.STORAGE_DIR), help="Ray runs folder"
    )
    bench.add_argument("--out", type=Path, default=Path("analysis/bench"), help="results folder")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from sentune import bench
    from sentune.errors import SpaceError

    gpus = args.gpus_per_trial
    size = args.size or ("space" if gpus == config.GPUS_AUTO or (gpus or 0) > 0 else "cpu")
    overrides = dict(bench.CPU_SIZES) if size == "cpu" else {}
    flags = {**_OVERRIDES, "max_length": "train.max_length"}
    for flag, key in flags.items():
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    overrides.update(_parse_set(args.set))
    try:
        seeds = (
            tuple(int(s) for s in args.seeds.split(","))
            if args.seeds
            else tuple(range(args.repeats))
        )
    except ValueError:
        raise SpaceError(
            f"--seeds {args.seeds!r}: give whole numbers, e.g. --seeds 0,1,2"
        ) from None
    if not seeds or args.budget_minutes <= 0:
        raise SpaceError("give at least one seed (--repeats 1) and a positive --budget-minutes")
    options = bench.BenchOptions(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        seeds=seeds,
        budget_s=args.budget_minutes * 60,
        target=args.target,
        out_root=args.out,
        storage=args.storage,
        precision=args.precision,
        device=args.device,
        peer_threads=args.peer_threads,
        throughput=not args.no_throughput,
    )
    bench.run_benchmark(args.space, overrides=overrides, options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
