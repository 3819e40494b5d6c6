"""`sentune export` and `sentune predict`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sentune import config
from sentune.cli.options import ANALYSIS_HELP, RUN_HELP, STORAGE_HELP
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
    export.add_argument("--threads", type=int, help="intra-op threads (default: CPU count)")
    export.add_argument("--out", type=Path, help="export folder (default: ANALYSIS/<run>/export)")
    export.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    export.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=ANALYSIS_HELP
    )
    export.add_argument(
        "--cache-dir", type=Path, default=Path(config.CACHE_DIR), help="the token id cache"
    )
    export.set_defaults(func=_export)


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
