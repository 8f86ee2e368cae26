"""``engagement-monitor status`` and ``engagement-monitor top``: read the Redis read model.

Both read Redis only (readers never ask the workers, docs/readmodel.md), so they work with
any number of workers and while workers restart. ``status`` sums the partition
snapshots present and warns when some are missing (a worker down for longer than
the snapshot TTL, or not started yet). ``--json`` prints the documents described
in docs/readmodel.md; their schema is stable (``schema`` names its version).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from agents.readmodel import check_day, connect, read_status, read_top, today
from streams import metric_names as names
from streams import settings as settings_mod
from streams.security import redact_url


def _settings_args(parser: argparse.ArgumentParser) -> None:
    settings_mod.add_arguments(parser, names=("redis_url", "app_id"))


# -- status ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "communities",
        nargs="*",
        metavar="COMMUNITY",
        help='only these communities ("*": all communities of a platform)',
    )
    parser.add_argument("--platform", help="only this platform")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.add_argument("--watch", action="store_true", help="refresh the table live")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="--watch: refresh every N seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=0,
        help="--watch: stop after N seconds (default: until Ctrl-C)",
    )
    _settings_args(parser)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _when(ms: int | None) -> str:
    if ms is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + " UTC"


def warnings(doc: dict[str, Any]) -> list[str]:
    parts = doc["partitions"]
    if not parts["present"]:
        return [
            f"no snapshots in Redis for app id {doc['app_id']!r} "
            "(no worker running, or it cannot reach Redis)"
        ]
    if not parts["complete"]:
        return [
            f"only {len(parts['present'])} of {parts['expected']} partitions have a "
            f"snapshot (missing {parts['missing']}): counts are partial"
        ]
    return []


def build_table(doc: dict[str, Any]) -> Any:
    """A rich table of the status document (pure: tested without a terminal)."""
    from rich.table import Table
    from rich.text import Text

    windows = doc["windows"]
    # names come from producers: Text() shows them literally, a str would be
    # read as rich markup ("[/bold]" crashed the view, "[link=…]" made a hyperlink)
    title = Text(f"{doc['app_id']} — as of {_when(doc['as_of_ms'])}")
    table = Table(title=title, title_justify="left")
    table.add_column("platform")
    table.add_column("community")
    for window in windows:
        table.add_column(f"active {window}", justify="right")
    table.add_column("followers", justify="right")
    table.add_column(f"{names.DAU_WINDOW}/followers", justify="right")
    for name in names.STICKINESS:  # dau_mau -> DAU/MAU
        table.add_column(name.upper().replace("_", "/"), justify="right")
    for row in doc["communities"]:
        table.add_row(
            Text(row["platform"]),
            Text(row["community"]),
            *(f"{row['active'].get(w, 0):,}" for w in windows),
            f"{row['followers']:,}",
            _pct(row["active_per_follower"].get(names.DAU_WINDOW)),
            *(_pct(row["stickiness"][name]) for name in names.STICKINESS),
        )
    return table


async def _with_client(url: str, fn: Callable[[Any], Any]) -> Any:
    client = connect(url)
    try:
        return await fn(client)
    finally:
        await client.aclose()


def fetch_status(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        asyncio.run(
            _with_client(
                args.redis_url,
                lambda c: read_status(c, args.app_id, args.communities, args.platform),
            )
        )
    )


def _render(args: argparse.Namespace) -> Any:
    from rich.console import Group
    from rich.text import Text

    try:
        doc = fetch_status(args)
    except Exception as exc:  # noqa: BLE001 - shown in the live view; retried next refresh
        return Text(f"waiting for Redis at {redact_url(args.redis_url)} ({exc})", style="yellow")
    notes = [Text(w, style="yellow") for w in warnings(doc)]
    return Group(build_table(doc), *notes)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.watch:
        from rich.live import Live

        deadline = time.monotonic() + args.seconds if args.seconds else None
        with Live(_render(args), console=Console(), refresh_per_second=4) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(args.interval)
                live.update(_render(args))
        return 0
    try:
        doc = fetch_status(args)
    except Exception as exc:  # noqa: BLE001 - a one-line error, not a traceback
        print(
            f"engagement-monitor status: cannot read Redis at {redact_url(args.redis_url)}: {exc}",
            file=sys.stderr,
        )
        return 1
    for warning in warnings(doc):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(build_table(doc))
    return 0


# -- top -------------------------------------------------------------------------------


def add_top_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "community",
        metavar="COMMUNITY",
        help='community name ("*": all communities of the platform)',
    )
    parser.add_argument("--platform", help="only this platform (default: every platform)")
    parser.add_argument("--day", help="UTC day YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--limit", type=int, default=10, help="users (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    _settings_args(parser)


def fetch_top(args: argparse.Namespace) -> dict[str, Any]:
    day = check_day(args.day) if args.day else today()
    if args.limit < 1:
        raise ValueError("--limit must be at least 1")
    return dict(
        asyncio.run(
            _with_client(
                args.redis_url,
                lambda c: read_top(c, args.app_id, args.community, day, args.limit, args.platform),
            )
        )
    )


def run_top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    try:
        doc = fetch_top(args)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - a one-line error, not a traceback
        print(
            f"engagement-monitor top: cannot read Redis at {redact_url(args.redis_url)}: {exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    console = Console()
    if not doc["platforms"]:
        print(f"no top users for {doc['community']!r} on {doc['day']}", file=sys.stderr)
    for entry in doc["platforms"]:
        table = Table(
            title=Text(f"{entry['platform']} / {doc['community']} — {doc['day']} (UTC)"),
            title_justify="left",
        )
        table.add_column("#", justify="right")
        table.add_column("user")
        table.add_column("active events", justify="right")
        for rank, user in enumerate(entry["users"], 1):
            table.add_row(str(rank), Text(user["user_id"]), f"{user['score']:,}")
        console.print(table)
    return 0
