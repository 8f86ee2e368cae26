"""Every command line written in README.md and docs/*.md parses as written.

The commands are extracted from the markdown by tests/docs_commands.py and handed
to the real argument parsers: ``engagement-monitor`` (commands/cli.py),
``deploy/local/stack`` (emstack) and ``make`` (the Makefile's targets); a python
script must exist. A synopsis (a line with ``[optional]`` parts) is checked for its
subcommand and its flags. So a renamed flag, a removed subcommand or an example
argparse would refuse (as ``--from -2m`` once was) fails here, in a second, without
services. That the commands *do* what the docs say is
tests/integration/test_docs_examples.py's job, which runs each of them as
docs/examples/commands.toml says; this file also checks that table against the docs.
"""

from __future__ import annotations

import argparse
import re
import sys

import pytest

from commands import cli
from tests import docs_commands as docs

REPO = docs.REPO
CALLS = [(c.where, list(c.argv), c.synopsis) for c in docs.documented()]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _check_synopsis(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """Subcommand (and sub-subcommand) exist — each of ``a|b`` choices; every --flag
    is one of theirs (of the first choice's)."""
    words = [a.strip("[]") for a in args]
    while True:
        subs = _subparsers(parser)
        choices = words[0].split("|") if words else []
        if not subs or not choices or not set(choices) <= set(subs):
            break
        parser, words = subs[choices[0]], words[1:]
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


def test_the_docs_have_commands_to_check() -> None:
    programs = {argv[0].removeprefix(".venv/bin/") for _w, argv, _s in CALLS}
    scripts = {p for p in programs if p.endswith(".py")}
    assert programs - scripts == {"engagement-monitor", "deploy/local/stack", "make"}
    assert {"deploy/prometheus/rules_gen.py", "bench/pipeline_bench.py"} <= scripts
    subcommands = {argv[1] for _w, argv, _s in CALLS if argv[0].endswith("engagement-monitor")}
    assert set(_subparsers(cli.build_parser())) - {"simulate-file"} <= subcommands | {"demo"}
    assert len(CALLS) > 60


@pytest.mark.parametrize(("where", "argv", "synopsis"), CALLS, ids=[c[0] for c in CALLS])
def test_documented_command_parses(
    where: str, argv: list[str], synopsis: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    program, args = argv[0], argv[1:]
    if program.endswith(".py"):
        assert (REPO / program).is_file(), f"{where}: no script {program}"
        return
    if program == "make":
        assert set(args) <= _make_targets(), f"{where}: no make target {args}"
        return
    parser = _stack_parser() if program == "deploy/local/stack" else cli.build_parser()
    try:
        _parse(parser, args, synopsis)
    except AssertionError as exc:
        err = capsys.readouterr().err
        raise AssertionError(f"{where}: {' '.join(argv)}: {exc}\n{err}") from None


def test_the_docs_examples_table_names_only_documented_commands() -> None:
    """docs/examples/commands.toml (how tests/integration/test_docs_examples.py runs
    each command): an entry whose command left the docs is stale."""
    table = docs.table()
    keys = {docs.key(call) for call in docs.documented()}
    stale = sorted(set(table) - keys - set(docs.SECTIONS))
    for pattern in table["exclude_matching"]:
        assert any(re.search(pattern, k) for k in keys), f"no command matches {pattern}"
    assert not stale, f"entries for commands no doc has: {stale}"
    known = {"exclude", "run", "phase", "chain", "before", "expect", "reject", "retry",
             "serve", "probe", "keep", "env", "ctrl_c", "terminal", "known_issue"}  # fmt: skip
    for name, entry in table.items():
        if name not in docs.SECTIONS:
            assert set(entry) <= known, f"{name}: unknown fields {set(entry) - known}"
            assert "exclude" not in entry or len(entry) == 1, f"{name}: excluded and run"
            assert not entry.get("serve") or "probe" in entry, f"{name}: serve needs a probe"


def test_a_synopsis_says_what_to_run() -> None:
    """A usage line with [optional] parts cannot run as written: its entry gives an
    instance (``run``) or a reason not to run it."""
    table = docs.table()
    for call in docs.documented():
        if call.synopsis and any(c in call.line for c in "[]"):
            entry = docs.entry(table, docs.key(call))
            assert "run" in entry or "exclude" in entry, f"{call.where}: {docs.key(call)}"
