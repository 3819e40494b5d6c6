"""`sentune search` (and `--resume`) and `sentune keys`."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from sentune import config
from sentune.cli.options import (
    ANALYSIS_HELP,
    OVERRIDES,
    STORAGE_HELP,
    add_overrides,
    add_runtime_options,
    add_tracking_options,
    parse_set,
    tracking_options,
)
from sentune.cli.results import resolve_run, show_leaderboard, write_report

log = logging.getLogger("sentune")


def add_search_parser(commands) -> None:
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
        "and budget from its manifest); with --trials N, grow a search that ended to N trials "
        "in all (N is a total, more than it ran)",
    )
    search.add_argument(
        "--warm-start",
        type=Path,
        metavar="RUN",
        help="seed the new search's study with the trials of RUN, a run on the same data: the "
        "sampler starts informed, the budget is all new trials; keys that differ are listed",
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
    search.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (parameters, data sizes, max_length, trials, concurrency, sampler) "
        "and a wall-time estimate from a few timed training steps, then exit; runs no search "
        "and makes no run folder",
    )
    add_overrides(search, (*OVERRIDES, "set"))
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
    add_runtime_options(search)
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
    search.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    search.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=ANALYSIS_HELP
    )
    add_tracking_options(search)
    search.set_defaults(func=run_search)


def add_keys_parser(commands) -> None:
    keys = commands.add_parser("keys", help="list the dotted keys of search spaces and --set")
    keys.set_defaults(func=show_keys)


def run_search(args: argparse.Namespace) -> int:
    """Run (or resume) a search, then print its leaderboard and write its report.

    Raises:
        SearchFailedError: Every trial failed (exit code 2, as for every `SentuneError`); no
            leaderboard or report is made of errors alone.
    """
    from sentune import search, space
    from sentune.errors import SpaceError
    from sentune.search.driver import check_succeeded

    overrides = {
        key: getattr(args, flag)
        for flag, key in OVERRIDES.items()
        if getattr(args, flag) is not None
    }
    if args.compile:
        overrides["train.compile"] = True
    overrides.update(parse_set(args.set))
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
        tracking=tracking_options(args),
    )
    if args.dry_run and args.resume is not None:
        raise SpaceError(
            "--dry-run plans a new search and --resume continues one as it was planned (its "
            "manifest holds that plan); drop one of them"
        )
    if args.resume is not None:
        # A bare run name works too; a run in object storage is pulled into its mirror.
        args.resume = resolve_run(str(args.resume), args.storage, cache_dir=options.cache_dir)
        _check_resume_args(args, overrides)
        if args.trials is not None:
            run_dir = search.grow(args.resume, trials=args.trials, options=options)
        else:
            run_dir = search.resume(args.resume, options=options)
    else:
        if args.space is None:
            raise SpaceError("name a space (e.g. `sentune search heads`) or pass --resume RUN")
        spec = space.load(args.space, overrides=overrides, max_latency_ms=args.max_latency_ms)
        warm_start = None
        if args.warm_start is not None:
            warm_start = resolve_run(
                str(args.warm_start), args.storage, cache_dir=options.cache_dir
            )
        if args.dry_run:
            return show_plan(spec, options, warm_start=warm_start)
        run_dir = search.run(spec, options=options, warm_start=warm_start)
    check_succeeded(run_dir, options=options)
    analysed = time.perf_counter()
    show_leaderboard(run_dir, args.analysis)
    try:
        write_report(run_dir, args.analysis)
    except Exception as exc:  # noqa: BLE001 - the search is done; a report failure must not lose it
        log.error("the report of %s failed (%s: %s)", run_dir, type(exc).__name__, exc)
        log.error("retry with: make report RUN=%s", run_dir)
    log.info(
        "leaderboard and report written in %.1fs (the search itself ended before)",
        time.perf_counter() - analysed,
    )
    _track_outputs(run_dir, args.analysis, options)
    return 0


def _track_outputs(run_dir: Path, analysis_root: Path, options) -> None:
    """The analysis files and the winner to the run's trackers (MLflow's parent run, W&B)."""
    from sentune import tracking
    from sentune.search.where import open_store

    tracking.log_search_outputs(run_dir, open_store(options), analysis_root / run_dir.name)


def show_plan(spec, options, *, warm_start: Path | None = None) -> int:
    """`--dry-run`: print the search's plan and estimate (`search.plan`); nothing is run."""
    from sentune.search.plan import build_plan
    from sentune.search.plan_text import format_plan

    print(format_plan(build_plan(spec, options=options, warm_start=warm_start)))
    return 0


def _check_resume_args(args: argparse.Namespace, overrides: dict) -> None:
    """A resumed search is the search that was started: its space and budget cannot change,
    except the trial budget of a search grown with `--trials` (`search.grow`)."""
    from sentune.errors import RunError
    from sentune.runs import read_manifest

    manifest = read_manifest(args.resume)
    name = manifest.space.name
    if args.space is not None and args.space not in (name, manifest.space.path):
        raise RunError(
            f"{args.resume} is a run of space {name!r}, not {args.space!r}; drop the space "
            f"or pass {name}"
        )
    # `--trials` grows the resumed search; `--set budget.trials=N` stays an override.
    grown = {OVERRIDES["trials"]} if args.trials is not None else set()
    changed = sorted(set(overrides) - grown) + [
        flag
        for flag, changed in (
            ("strategy", args.strategy is not None),
            ("precision", args.precision != config.TrialSettings.precision),
            ("device", args.device != config.TrialSettings.device),
            ("name", args.name is not None),
            ("max-latency-ms", args.max_latency_ms is not None),
            ("warm-start", args.warm_start is not None),
        )
        if changed
    ]
    if changed:
        raise RunError(
            f"--resume continues {args.resume} as it was started; drop the overrides "
            f"({', '.join(changed)}) or start a new search"
        )


def show_keys(args: argparse.Namespace) -> int:
    print(config.keys_table())
    return 0
