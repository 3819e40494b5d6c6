"""`sentune bench`: search strategies against each other and against the peer."""

from __future__ import annotations

import argparse
from pathlib import Path

from sentune import config
from sentune.cli.options import OVERRIDES, add_overrides, add_runtime_options, parse_set


def add_bench_parser(commands) -> None:
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
    add_overrides(
        bench,
        ("model", "dataset", "train_size", "val_size", "max_length", "max_epochs",
         "concurrency", "cpus_per_trial", "gpus_per_trial", "set"),
    )  # fmt: skip
    bench.add_argument("--peer-threads", type=int, help="torch threads of the peer (default: all)")
    add_runtime_options(bench)
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
    flags = {**OVERRIDES, "max_length": "train.max_length"}
    for flag, key in flags.items():
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    overrides.update(parse_set(args.set))
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
