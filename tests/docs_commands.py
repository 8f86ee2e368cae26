"""The command lines written in README.md and docs/*.md, as a reader would copy them.

Shared by ``tests/unit/test_docs_commands.py`` (each one parses) and
``tests/integration/test_docs_examples.py`` (each one runs against the stack, or is
excluded with a reason in ``docs/examples/commands.toml``).

Commands come from indented code blocks (``\\`` continuations joined, ``# comments``
dropped, pipes, ``&``, ``&&`` and ``VAR=value`` prefixes understood) and from inline
code spans (also one that wraps onto the next line). A program call is
``engagement-monitor`` (also ``.venv/bin/…``), ``deploy/local/stack``, ``make``, or
``python`` running a script of this repository. A span that starts with one of
engagement-monitor's subcommands and says more (`` `dlq show --reason R` ``, `` `replay
--from-topic` ``) is a call of engagement-monitor too: prose about the program often
leaves its name out. Such a mention names flags rather than giving a command to copy,
so it counts as a synopsis (its subcommand and flags are checked, it is not parsed).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commands import cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TABLE = REPO / "docs" / "examples" / "commands.toml"
PROGRAMS = ("engagement-monitor", ".venv/bin/engagement-monitor", "deploy/local/stack", "make")
PYTHONS = ("python", "python3", ".venv/bin/python")
_INLINE = re.compile(r"`([^`]+)`")
#: a fenced code block's first or last line (``` or ~~~, possibly indented)
_FENCE = re.compile(r"^\s*(```|~~~)")
#: a paragraph: consecutive lines that are not blank (a code span never crosses a blank line)
_PARAGRAPH = re.compile(r"(?:^[^\n]*\S[^\n]*(?:\n|$))+", re.MULTILINE)
#: engagement-monitor's subcommands: a span starting with one (and more words) is a
#: call of it even without the program name (`replay --from-topic X` in prose)
SUBCOMMANDS = tuple(name for name, _module, _help in cli.COMMANDS)
_UNNAMED = re.compile(
    r"^((?:[A-Z_][A-Z0-9_]*=\S*\s+)*)((?:" + "|".join(map(re.escape, SUBCOMMANDS)) + r")\s+\S.*)$",
    re.DOTALL,
)
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_SEPARATORS = ("|", "&&", "&", ";", "||")


@dataclass(frozen=True)
class Call:
    """One program call found in the docs."""

    where: str  # page:line
    line: str  # the whole shell line it is part of (continuations joined)
    env: tuple[str, ...]  # its VAR=value prefixes
    argv: tuple[str, ...]  # the call itself
    synopsis: bool  # a usage line with [optional] parts, or a bare name in prose
    inline: bool  # from a `code span` in prose, not a code block

    @property
    def program(self) -> str:
        return self.argv[0].removeprefix(".venv/bin/")


def block_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, line) of indented code blocks, continuations joined."""
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        code = line.strip()
        in_block = line.startswith("    ") and not code.startswith(("- ", "* ", "|"))
        if not in_block and not (pending and line.startswith("    ")):
            pending = ""
            continue
        if not pending:
            start = number
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        yield start, pending + code
        pending = ""


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line number where it starts, text) of the inline code spans of a markdown page.

    A span may wrap over lines within a paragraph (the line break and the indentation
    around it read as one space, as markdown renders it); fenced code blocks hold none.
    """
    prose, fenced = [], False
    for line in text.splitlines():
        fence = bool(_FENCE.match(line))
        fenced = fenced != fence
        prose.append("" if fenced or fence else line)
    joined = "\n".join(prose)
    for paragraph in _PARAGRAPH.finditer(joined):
        first = joined.count("\n", 0, paragraph.start()) + 1
        body = paragraph.group(0)
        for span in _INLINE.finditer(body):
            number = first + body.count("\n", 0, span.start())
            yield number, re.sub(r"\s*\n\s*", " ", span.group(1)).strip()


def with_program(span: str) -> str:
    """A span that names a subcommand without the program (`dlq stats`, `replay
    --from-topic X`) as the command line a reader runs; any other span as it is."""
    unnamed = _UNNAMED.match(span)
    return f"{unnamed.group(1)}engagement-monitor {unnamed.group(2)}" if unnamed else span


def calls_in(line: str) -> Iterator[tuple[list[str], list[str]]]:
    """(VAR=value prefixes, argv) of each program call in one shell line."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return
    words: list[str] = []
    for token in [*tokens, "|"]:
        if token not in _SEPARATORS:
            words.append(token)
            continue
        env = []
        while words and _ENV.match(words[0]):
            env.append(words.pop(0))
        script = words[:1] and words[0] in PYTHONS and len(words) > 1
        if script and (REPO / words[1]).is_file():
            yield env, words[1:]  # a script of this repository
        elif words and words[0] in PROGRAMS:
            yield env, words
        words = []


def documented() -> list[Call]:
    """Every program call in the docs, in page order."""
    found = []
    for page in PAGES:
        found += calls_on_page(page.name, page.read_text(encoding="utf-8"))
    return found


def calls_on_page(name: str, text: str) -> list[Call]:
    """The program calls of one markdown page: code blocks first, then code spans."""
    found = []
    spans = [(n, with_program(span), True, span) for n, span in code_spans(text)]
    blocks = [(n, line, False, line) for n, line in block_lines(text)]
    for number, line, inline, written in [*blocks, *spans]:
        for env, argv in calls_in(line):
            script = argv[0].endswith(".py")  # runs without arguments too
            if (len(argv) < 2 and not script) or argv[1:2] and argv[1].endswith(":"):
                continue  # a bare name in prose; an output line
            synopsis = any(c in line for c in "[]") or "..." in line or "…" in line
            # "`engagement-monitor backfill`" in prose names a command; `dlq show
            # --reason R` (no program name) mentions one; `stats|show` lists choices
            synopsis = synopsis or (inline and (len(argv) == 2 or written != line))
            synopsis = synopsis or any("|" in word for word in argv)
            where = f"{name}:{number}"
            found.append(Call(where, line, tuple(env), tuple(argv), synopsis, inline))
    return found


def key(call: Call) -> str:
    """How docs/examples/commands.toml names a command: its words, VAR=value first."""
    return " ".join((*call.env, *call.argv))


#: the tables of docs/examples/commands.toml that are not entries
SECTIONS = ("substitute", "exclude_matching")


def table() -> dict[str, Any]:
    """docs/examples/commands.toml: substitutions and how each command is run."""
    with TABLE.open("rb") as handle:
        return tomllib.load(handle)


def entry(found: dict[str, Any], name: str) -> dict[str, Any]:
    """The table's entry for a key: its own, else an exclusion by pattern, else {}
    (run as written)."""
    if name in found:
        return dict(found[name])
    for pattern, reason in found.get("exclude_matching", {}).items():
        if re.search(pattern, name):
            return {"exclude": reason}
    return {}
