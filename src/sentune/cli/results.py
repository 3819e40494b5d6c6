"""The commands that read a finished (or running) run: `leaderboard`, `report`, `dashboard`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sentune import config
from sentune.cli.options import ANALYSIS_HELP, RUN_HELP, STORAGE_HELP

log = logging.getLogger("sentune")


def add_leaderboard_parser(commands) -> None:
    board = commands.add_parser("leaderboard", help="print and save the leaderboard of a run")
    board.add_argument("run", nargs="?", help=RUN_HELP)
    board.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    board.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=ANALYSIS_HELP
    )
    board.set_defaults(func=_leaderboard)


def add_report_parser(commands) -> None:
    report = commands.add_parser(
        "report", help="write analysis/<run>/report.html (leaderboard, importance, curves, …)"
    )
    report.add_argument("run", nargs="?", help=RUN_HELP)
    report.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    report.add_argument(
        "--analysis", type=Path, default=Path(config.ANALYSIS_DIR), help=ANALYSIS_HELP
    )
    report.add_argument(
        "--screenshot", action="store_true", help="also save report.png (needs Chromium)"
    )
    report.set_defaults(func=_report)


def _leaderboard(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.storage)
    show_leaderboard(run_dir, args.analysis)
    return 0


def _report(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.storage)
    write_report(run_dir, args.analysis, screenshot=args.screenshot)
    return 0


def add_dashboard_parser(commands) -> None:
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
    dashboard.add_argument("--storage", default=config.STORAGE_DIR, help=STORAGE_HELP)
    dashboard.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from sentune.report import dashboard

    # A live view wants the search that is running now, which is not finished yet.
    run_dir = resolve_run(args.run, args.storage, finished=False)
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


def write_report(run_dir: Path, analysis_root: Path, *, screenshot: bool = False) -> Path:
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


def resolve_run(
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


def show_leaderboard(run_dir: Path, analysis_root: Path) -> None:
    """Write a run's leaderboard (and its confirmation over seeds) into `analysis_root/<run>/`
    and print it in `terminal.WIDTH` columns: its main columns here, every column in the file.
    The one leaderboard a search prints (the summary after it names the top trials only)."""
    import pandas as pd

    from sentune import analysis, runs
    from sentune.report import terminal
    from sentune.report.sentences import counted

    run = runs.open_run(run_dir)
    table = analysis.leaderboard(run)
    out = analysis_root / Path(run_dir).name
    out.mkdir(parents=True, exist_ok=True)
    path = runs.write_csv(table, out / analysis.LEADERBOARD_FILE)
    failed = table[table["status"] == analysis.ERROR]
    lines = [
        f"Leaderboard of {run_dir} (best epoch's {config.VAL_MACRO_F1}):",
        analysis.RANKING_RULE,
        *terminal.leaderboard_lines(table, run.manifest.space.searched),
        f"{counted(len(table), 'trial')}, {int(table['stopped_early'].sum())} stopped "
        f"early by ASHA, {len(failed)} failed",
        *(
            terminal.clip(f"  {row.trial_id} failed: {row.error}", terminal.WIDTH)
            for row in failed.itertuples()
        ),
        f"every column (each epoch's score, accuracy, loss, checkpoint): {path}",
    ]
    confirmed = analysis.confirmation(run, table)
    if confirmed is not None:
        path = runs.write_csv(confirmed.table, out / analysis.CONFIRM_FILE)
        configs = confirmed.configs.astype(object)
        cells = pd.DataFrame({c: terminal.column_cells(configs[c].tolist(), c) for c in configs})
        lines += [
            "",
            "Confirmation over seeds (best mean first; the winner is the first):",
            *terminal.table_lines(cells),
            f"confirmation: {path}",
        ]
    print("\n" + terminal.fit("\n".join(lines)))
