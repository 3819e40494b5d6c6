"""`sentune search|leaderboard|report|dashboard|export|predict|bench|keys`: the command line.

One module a group of commands, each adding its parser (`add_*_parser`) and running it; the
options several commands share are `options.py`. A `SentuneError` becomes one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import textwrap
import time
from importlib import metadata

from sentune.cli.bench import add_bench_parser
from sentune.cli.export import add_export_parser, add_predict_parser, add_refit_parser
from sentune.cli.results import add_dashboard_parser, add_leaderboard_parser, add_report_parser
from sentune.cli.search import add_keys_parser, add_search_parser, run_search
from sentune.errors import SentuneError

__all__ = ["main", "run_search"]


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


#: An option's help starts at this column at most (a long option gets a line of its own), and
#: help wraps at this width, or the terminal's when narrower.
HELP_POSITION, HELP_WIDTH = 30, 100


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions' lines as written (wrapping one wider than `HELP_WIDTH`) and shows each
    option's default, unless it has none or its help already says it; `HELP_POSITION` and
    `HELP_WIDTH` keep the help readable in a wide terminal."""

    def __init__(self, prog: str, **kwargs) -> None:
        columns = shutil.get_terminal_size().columns - 2
        kwargs.setdefault("max_help_position", HELP_POSITION)
        kwargs.setdefault("width", max(40, min(HELP_WIDTH, columns)))
        super().__init__(prog, **kwargs)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if len(indent + line) <= HELP_WIDTH:
                lines.append(indent + line)
                continue
            own = indent + line[: len(line) - len(line.lstrip())]
            lines += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=own)
        return "\n".join(lines)

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


_DESCRIPTION = """\
Hyperparameter search for fine-tuning BERT-family sentiment classifiers: Ray Tune runs the
trials, Optuna proposes configurations, ASHA stops weak trials early on validation macro-F1.

commands:
  search       run a search space (search_spaces/<name>.yaml); start with `sentune search smoke`
  leaderboard  print and save a run's leaderboard (default: the latest finished run)
  report       write a run's one-file HTML report (importance, curves, TF-IDF floor, confusion)
  dashboard    watch a run's Optuna study live in optuna-dashboard (default: the latest run)
  refit        retrain a run's winner on the whole training split (export runs it when needed)
  export       export a run's winner: Hugging Face folder, ONNX, int8; test scores, model card
  predict      classify texts or a CSV/TSV/JSONL file with an export (onnxruntime, no torch)
  bench        compare search strategies against each other and Trainer.hyperparameter_search
  keys         list every dotted key a space or --set can name, with its default

`sentune COMMAND -h` explains a command's options.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentune",
        usage="%(prog)s [-h] [-v] [--version] COMMAND ...",
        description=_DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # The description lists the commands in words; argparse's own list would repeat it. `prog`:
    # each command's usage is `sentune COMMAND …` (argparse would prefix it with `usage` above).
    commands = parser.add_subparsers(
        required=True, metavar="COMMAND", help=argparse.SUPPRESS, prog=parser.prog
    )

    for add_parser in (
        add_search_parser,
        add_leaderboard_parser,
        add_report_parser,
        add_dashboard_parser,
        add_refit_parser,
        add_export_parser,
        add_predict_parser,
        add_bench_parser,
        add_keys_parser,
    ):
        add_parser(commands)
    for command in commands.choices.values():
        command.formatter_class = _HelpFormatter
        # Also after the subcommand (`sentune search heads -v`); SUPPRESS keeps the top-level
        # flag's value when this one is not given.
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
    return parser
