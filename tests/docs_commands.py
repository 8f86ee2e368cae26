"""The command lines written in README.md and docs/*.md, as a reader would copy them.

Shared by ``tests/unit/test_docs_commands.py`` (each one parses) and
``tests/integration/test_docs_examples.py`` (each one runs against the stack, or is
excluded with a reason in ``docs/examples/commands.toml``).

Commands come from indented code blocks (``\\`` continuations joined, ``# comments``
dropped, pipes, ``&``, ``&&`` and ``VAR=value`` prefixes understood) and from inline
code spans. A program call is ``engagement-monitor`` (also ``.venv/bin/…``),
``deploy/local/stack``, ``make``, or ``python`` running a script of this repository.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TABLE = REPO / "docs" / "examples" / "commands.toml"
PROGRAMS = ("engagement-monitor", ".venv/bin/engagement-monitor", "deploy/local/stack", "make")
PYTHONS = ("python", "python3", ".venv/bin/python")
_INLINE = re.compile(r"`([^`]+)`")
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
        text = page.read_text(encoding="utf-8")
        spans = [
            (n, m.group(1), True)
            for n, row in enumerate(text.splitlines(), 1)
            for m in _INLINE.finditer(row)
        ]
        blocks = [(n, line, False) for n, line in block_lines(text)]
        for number, line, inline in [*blocks, *spans]:
            for env, argv in calls_in(line):
                script = argv[0].endswith(".py")  # runs without arguments too
                if (len(argv) < 2 and not script) or argv[1:2] and argv[1].endswith(":"):
                    continue  # a bare name in prose; an output line
                synopsis = any(c in line for c in "[]") or "..." in line or "…" in line
                # "`engagement-monitor backfill`" in prose names a command
                synopsis = synopsis or (inline and len(argv) == 2)
                where = f"{page.name}:{number}"
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
