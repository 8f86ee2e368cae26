"""The ``engagement-monitor`` command: one entry point, one module per subcommand.

Subcommand modules stay cheap to import (Faust and aiokafka are imported inside
``run``) so that ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import re
import sys
from collections.abc import Sequence

#: (name, module, one-line help). Each module has ``add_arguments(parser)`` and
#: ``run(args) -> int``.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("worker", "commands.worker", "run the Faust worker (ingest, state, metrics)"),
    ("simulate", "commands.simulate", "produce realistic synthetic traffic"),
    ("produce", "commands.produce", "send a JSONL file of events to the input topic"),
    ("watch", "commands.watch", "live table of a worker's active users and followers"),
    ("demo", "commands.demo", "run a worker and the simulator on the local stack, live"),
    (
        "replay",
        "commands.replay",
        "copy events of a time range from a topic or a file into a topic",
    ),
    ("status", "commands.status", "active users, followers and ratios from the Redis read model"),
    ("top", "commands.top", "most engaged users of a community today, from Redis"),
    ("api", "commands.api", "JSON HTTP API over the Redis read model"),
    (
        "rebuild",
        "commands.rebuild",
        "recompute the state from a point in time (dry run by default)",
    ),
    ("backfill", "commands.backfill", "write past gauges as OpenMetrics for promtool backfilling"),
    ("pseudonym", "commands.pseudonym", "the pseudonym stored for a user id (EM_USER_ID_KEY)"),
    ("dlq", "commands.dlq", "dead letters: counts, samples, export, re-send corrected ones"),
    (
        "audit",
        "commands.audit",
        "recompute every gauge from the input topic and compare with the live numbers",
    ),
    (
        "alerts-webhook",
        "commands.alerts_webhook",
        "receive Alertmanager webhooks: print and record them",
    ),  # noqa: E501
)


def accept_relative_times(parser: argparse.ArgumentParser) -> None:
    """Let ``--from -2m`` (and ``-7m30s``) be a value, as the docs write it.

    argparse takes any argument starting with "-" for an option unless it looks like
    a negative *number*; here anything starting with "-" and a digit is a value (no
    option of ours starts so). argparse keeps that test in a private attribute
    (Python 3.11–3.13); ``tests/unit/commands/test_cli.py`` would catch a change."""
    parser._negative_number_matcher = re.compile(r"^-\d")  # noqa: SLF001


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engagement-monitor",
        description="Real-time monitor of active users for brand communities.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name, help_text in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command not built yet
        command = sub.add_parser(name, help=help_text, description=help_text)
        accept_relative_times(command)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(f"engagement-monitor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if argv is None:  # the program itself (the console script), not a test's call
            quick_exit()


def quick_exit() -> None:
    """Spare the interpreter's last garbage collections on the way out.

    At exit Python collects every object it still holds, which took 0.4-0.5 s after
    a replay here (aiokafka, aiohttp and the run's objects): more than a Ctrl-C'd
    replay may take to stop. Frozen objects are skipped by the collector; the process
    ends right after and the OS takes the memory back. Exit handlers and stream
    flushes still run."""
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
