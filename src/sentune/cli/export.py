"""`sentune export` and `sentune predict`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from sentune import config
from sentune.cli.options import (
    ANALYSIS_HELP,
    RUN_HELP,
    STORAGE_HELP,
    add_tracking_options,
    tracking_options,
)
from sentune.cli.results import resolve_run


def add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="export a run's winner: HF folder, ONNX, int8; test scores, benchmark"
    )
    export.add_argument("run", nargs="?", help=RUN_HELP)
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
    export.add_argument(
        "--no-refit",
        action="store_true",
        help="export the search's checkpoint as it is, without first retraining the "
        "configuration on the whole training split (the default when the search used a sample)",
    )
    export.add_argument(
        "--address", help="Ray cluster the refit runs on (default: the search's, else local)"
    )
    export.add_argument("--threads", type=int, help="intra-op threads (default: CPU count)")
    export.add_argument("--out", type=Path, help="export folder (default: ANALYSIS/<run>/export)")
    export.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    export.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=ANALYSIS_HELP
    )
    export.add_argument(
        "--cache-dir", type=Path, default=Path(config.CACHE_DIR), help="the token id cache"
    )
    add_tracking_options(export)
    export.add_argument(
        "--register",
        metavar="NAME",
        help="with MLflow: register the exported model as a new version of NAME in the Model "
        "Registry",
    )
    export.set_defaults(func=_export)


def add_refit_parser(commands) -> None:
    refit = commands.add_parser(
        "refit",
        help="retrain a run's winner on the whole training split (export then ships it)",
    )
    refit.add_argument("run", nargs="?", help=RUN_HELP)
    refit.add_argument("--trial", help="refit this trial id instead of the winner")
    refit.add_argument(
        "--force", action="store_true", help="train again even if a finished refit is there"
    )
    refit.add_argument(
        "--address", help="Ray cluster to run on (default: the search's, else local)"
    )
    refit.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    refit.add_argument(
        "--cache-dir", type=Path, default=Path(config.CACHE_DIR), help="the token id cache"
    )
    refit.set_defaults(func=_refit)


def add_predict_parser(commands) -> None:
    from sentune.serve.predict import OUTPUT_FORMATS

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
    run_dir = resolve_run(args.run, args.storage, cache_dir=args.cache_dir)
    trial = export.plan(run_dir, out_dir=args.out, analysis_root=args.analysis, options=options)
    if args.no_refit:
        options = replace(options, refit=False)
    else:
        _refit_if_sampled(run_dir, trial, args)
    result = export.export_winner(
        run_dir, out_dir=args.out, analysis_root=args.analysis, options=options
    )
    metrics = result.metrics
    print(f"\n{_floor_line(metrics)}")
    print(f"\nExported trial {result.winner.trial_id} of {run_dir} to {result.path}")
    print(_trained_on_line(metrics))
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
    _track_export(run_dir, result.path, metrics, args)
    return 0


def _track_export(run_dir: Path, folder: Path, metrics: dict, args: argparse.Namespace) -> None:
    """The export folder and its test scores to the run's trackers (or those of `--log-to`),
    registered in MLflow's Model Registry with `--register`."""
    from sentune import tracking
    from sentune.runs import storage

    tracking.log_export(
        run_dir,
        storage.open_storage(args.storage, cache_dir=args.cache_dir),
        folder,
        metrics=metrics,
        options=tracking_options(args),
        register=args.register,
    )


def _refit(args: argparse.Namespace) -> int:
    from sentune import export, runs, search

    run_dir = resolve_run(args.run, args.storage, cache_dir=args.cache_dir)
    trial = args.trial or export.select_winner(runs.open_run(run_dir)).trial_id
    if not search.needs_refit(runs.read_manifest(run_dir)):
        print(f"{run_dir} searched on the whole training split: its checkpoints need no refit")
        return 0
    done = search.refit(run_dir, trial, options=_refit_options(args), force=args.force)
    print(f"\nRefit of trial {trial}: {search.refit_summary(done.record)}")
    print(f"checkpoint: {done.checkpoint}\nexport it with: sentune export {run_dir}")
    return 0


def _refit_if_sampled(run_dir: Path, trial: str, args: argparse.Namespace) -> None:
    """Before an export: the configuration retrained on the whole training split when the
    search trained on a sample of it (or the refit already made, continued if interrupted)."""
    from sentune import runs, search

    if search.needs_refit(runs.read_manifest(run_dir)):
        search.refit(run_dir, trial, options=_refit_options(args))


def _refit_options(args: argparse.Namespace):
    import os

    from sentune import search

    return search.SearchOptions(
        address=args.address or os.environ.get("RAY_ADDRESS") or None,
        storage=args.storage,
        cache_dir=args.cache_dir,
        dashboard=False,
        verbose=getattr(args, "verbose", False),
        started_at=getattr(args, "started_at", None),
    )


def _floor_line(metrics: dict) -> str:
    """The summary's first line: the shipped model against the floor trained on the same
    examples, on the test split."""
    key = config.metric_name(config.TEST, config.MACRO_F1)
    model, floor = metrics["formats"]["pytorch"]["test"][key], metrics["floor"][key]
    against = metrics["vs_floor"]
    verdict = (
        f"beats the TF-IDF floor by {against['test_macro_f1_gain']:+.4f}"
        if against["beats_floor"]
        else f"does NOT beat the TF-IDF floor ({against['test_macro_f1_gain']:+.4f})"
    )
    overlap = " (their 95 % intervals overlap)" if against["intervals_overlap"] else ""
    return (
        f"The exported model {verdict}{overlap}: test macro-F1 {model:.4f} against {floor:.4f}, "
        f"both trained on the same {metrics['train_size']} examples."
    )


def _trained_on_line(metrics: dict) -> str:
    refit = metrics.get("refit")
    if refit:
        from sentune.export.card import search_score

        return (
            f"Trained on all {metrics['train_size']} training examples (refit, seed "
            f"{refit['seed']}, best epoch {refit['best_epoch']:g}, validation macro-F1 "
            f"{refit['val_macro_f1']:.4f}); the search trained on {refit['search_train_size']} "
            f"({search_score(metrics)})."
        )
    return f"Trained on {metrics['train_size']} training examples (the search's checkpoint)."


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
