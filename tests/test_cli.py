"""The command line as a new user meets it: help, version, verbosity, the dotted keys."""

from __future__ import annotations

import argparse
import logging
import re
from importlib import metadata
from pathlib import Path

import pytest

from sentune import cli, config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KEYS_PAGE = ROOT / "docs" / "keys.md"
COMMANDS = ("search", "leaderboard", "report", "dashboard", "export", "predict", "bench", "keys")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_and_shows_its_default():
    parser = cli._parser()
    commands = _subparsers(parser)
    assert set(COMMANDS) <= set(commands)
    for name, command in commands.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
        text = command.format_help()
        assert "-v, --verbose" in text, name
    search_help = " ".join(commands["search"].format_help().split())  # unwrapped
    max_failures = search_help.split("--max-failures MAX_FAILURES ")[1].split("--model")[0]
    assert "(default: 1)" in max_failures
    assert "(default: trials)" in search_help and "(default: auto)" in search_help
    assert "(default: None)" not in search_help


def test_top_level_help_is_for_users_and_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["-h"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^  {command} ", out, re.M), command
    assert "SentuneError" not in out and "sentune search smoke" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sentune {metadata.version('sentune')}"


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["-v", "keys"], True),
        (["keys", "-v"], True),
        (["keys", "--verbose"], True),
        (["keys"], False),
    ],
)
def test_verbose_before_or_after_the_command(argv, verbose, monkeypatch, capsys):
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert cli.main(argv) == 0
    assert levels == [logging.DEBUG if verbose else logging.INFO]


def test_keys_describe_every_dotted_key(capsys):
    rows = config.describe_keys()
    assert [r.key for r in rows] == config.dotted_keys()
    by_key = {r.key: r for r in rows}
    assert by_key["head.pooling"].allowed == ", ".join(config.POOLINGS)
    assert by_key["head.dropout"].allowed == "0 to 0.95"
    assert by_key["train.learning_rate"].default == repr(config.TrainConfig.learning_rate)
    assert by_key["train.warmup_ratio"].doc.startswith("Linear warmup")
    assert all(r.doc for r in rows), [r.key for r in rows if not r.doc]
    assert cli.main(["keys"]) == 0
    assert capsys.readouterr().out.strip() == config.keys_table()


def test_docs_keys_table_is_the_generated_one():
    text = KEYS_PAGE.read_text()
    match = re.search(r"<!-- keys:start -->\n(.*?)\n<!-- keys:end -->", text, re.S)
    assert match, "docs/keys.md lost its keys markers"
    assert match.group(1) == config.keys_table(), "docs/keys.md keys table is stale: make docs-keys"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"&[a-z]+;", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_readme_is_a_short_guide_that_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move depth to docs/"
    opening = "\n".join(lines[:15])
    assert "make search SPACE=heads" in opening and "make test" in opening


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_readme_and_docs_links_resolve(page):
    """The README is a guide that links to docs/ pages: every relative link reaches a file of
    the checkout, and every #anchor a heading of the page it names."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.is_relative_to(ROOT) or not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            if anchor not in {_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_names_the_command_and_keeps_a_normal_indent(command, monkeypatch, capsys):
    """`sentune export -h` starts `usage: sentune export`, not with the top-level usage, and its
    options' help starts by column 30 and wraps by column 100, in a wide terminal too."""
    monkeypatch.setenv("COLUMNS", "240")
    with pytest.raises(SystemExit) as done:
        cli.main([command, "-h"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sentune {command} [-h]"), out[:120]
    lines = out.splitlines()
    assert max(map(len, lines)) <= cli.HELP_WIDTH
    # An option's help starts on its own line or by column 30.
    starts = [len(line) - len(line.lstrip()) for line in lines if line.startswith("    ")]
    assert max(starts, default=0) <= cli.HELP_POSITION
