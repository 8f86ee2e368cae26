"""Every command line written in README.md and docs/*.md parses as written.

The commands are extracted from the markdown — code blocks (4-space indented, with
``\\`` continuations, pipes, ``&`` and ``VAR=value`` prefixes) and inline code spans —
and handed to the real argument parsers: ``engagement-monitor`` (commands/cli.py),
``deploy/local/stack`` (emstack) and ``make`` (the Makefile's targets). A synopsis
(a line with ``[optional]`` parts) is checked for its subcommand and its flags. So a
renamed flag, a removed subcommand or an example argparse would refuse (as
``--from -2m`` once was) fails here. What the commands *do* is the integration
tests' job (docs/own-kafka.md, docs/several-apps.md and the runbook name theirs).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands import cli

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PROGRAMS = ("engagement-monitor", ".venv/bin/engagement-monitor", "deploy/local/stack", "make")
_INLINE = re.compile(r"`([^`]+)`")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def _block_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines of indented code blocks, continuations joined."""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("    ") or line.lstrip().startswith(("-", "*", "|")):
            pending = ""
            continue
        code = line.strip()
        if not pending:
            start = number
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        yield start, pending + code
        pending = ""


def _commands(line: str) -> Iterator[list[str]]:
    """The argv of each program call in one shell line (pipes, ``&&``, ``&``)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return
    words: list[str] = []
    for token in [*tokens, "|"]:
        if token in ("|", "&&", "&", ";", "||"):
            while words and _ENV.match(words[0]):
                words.pop(0)
            if words and words[0] in PROGRAMS:
                yield words
            words = []
        else:
            words.append(token)


def documented() -> list[tuple[str, list[str], bool]]:
    """(where, argv, synopsis) for every program call in the docs."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        spans = [
            (n, m.group(1))
            for n, row in enumerate(text.splitlines(), 1)
            for m in _INLINE.finditer(row)
        ]
        inline = {(n, line) for n, line in spans}
        for number, line in [*_block_lines(text), *spans]:
            for argv in _commands(line):
                if len(argv) < 2 or argv[1].endswith(":"):  # a name in prose; an output line
                    continue
                synopsis = any(c in line for c in "[]") or "..." in line or "…" in line
                # "`engagement-monitor backfill`" in prose names a command: it must exist
                synopsis = synopsis or ((number, line) in inline and len(argv) == 2)
                found.append((f"{page.name}:{number}", argv, synopsis))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _check_synopsis(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """Subcommand (and sub-subcommand) exist; every --flag is one of theirs."""
    words = [a.strip("[]") for a in args]
    while True:
        subs = _subparsers(parser)
        if not subs or not words or words[0] not in subs:
            break
        parser, words = subs[words[0]], words[1:]
    assert not _subparsers(parser) or not words, f"unknown subcommand in {args}"
    known = set(parser._option_string_actions)  # noqa: SLF001
    for word in words:
        flag = word.split("=")[0]
        if flag.startswith("-") and not re.match(r"^-\d", flag):
            assert flag in known, f"{flag} is not an option of {parser.prog}"


def _parse(parser: argparse.ArgumentParser, args: list[str], synopsis: bool) -> None:
    if synopsis:
        _check_synopsis(parser, args)
        return
    try:
        parser.parse_args(args)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        raise AssertionError(f"argparse refused {args} (exit {exc.code})") from None


def _stack_parser() -> argparse.ArgumentParser:
    sys.path.insert(0, str(REPO / "deploy" / "local"))
    from emstack.cli import _parser

    return _parser()


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:", text, re.MULTILINE))


CALLS = documented()


def test_the_docs_have_commands_to_check() -> None:
    programs = {argv[0].removeprefix(".venv/bin/") for _w, argv, _s in CALLS}
    assert programs == {"engagement-monitor", "deploy/local/stack", "make"}
    subcommands = {argv[1] for _w, argv, _s in CALLS if argv[0].endswith("engagement-monitor")}
    assert set(_subparsers(cli.build_parser())) - {"simulate-file"} <= subcommands | {"demo"}
    assert len(CALLS) > 60


@pytest.mark.parametrize(("where", "argv", "synopsis"), CALLS, ids=[c[0] for c in CALLS])
def test_documented_command_parses(
    where: str, argv: list[str], synopsis: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    program, args = argv[0], argv[1:]
    if program == "make":
        assert set(args) <= _make_targets(), f"{where}: no make target {args}"
        return
    parser = _stack_parser() if program == "deploy/local/stack" else cli.build_parser()
    try:
        _parse(parser, args, synopsis)
    except AssertionError as exc:
        err = capsys.readouterr().err
        raise AssertionError(f"{where}: {' '.join(argv)}: {exc}\n{err}") from None
