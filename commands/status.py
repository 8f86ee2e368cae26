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

from agents.readmodel import MAX_TOP_LIMIT, check_day, connect, read_status, read_top, today
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
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="the audience per window: active followers, non-follower engagers, "
        "new, returning, dormant users, ghost followers",
    )
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


def _count(n: int, compact: bool) -> str:
    """``1,234,567``, or when space is short ``1.23M`` (exact below 10,000)."""
    if not compact or n < 10_000:
        return f"{n:,}"
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 1000 else f"{value:,.0f}{unit}"
    return str(n)


def _columns(doc: dict[str, Any], compact: bool) -> list[tuple[str, list[str]]]:
    """(header, cells) per column, most important first: names, windows, followers,
    then the ratios (dropped first when the terminal is narrow)."""
    rows, windows = doc["communities"], doc["windows"]
    columns = [
        ("platform", [r["platform"] for r in rows]),
        ("community", [r["community"] for r in rows]),
        *((w, [_count(r["active"].get(w, 0), compact) for r in rows]) for w in windows),
        ("followers", [_count(r["followers"], compact) for r in rows]),
        (
            f"{names.DAU_WINDOW}/fol.",
            [_pct(r["active_per_follower"].get(names.DAU_WINDOW)) for r in rows],
        ),
    ]
    for name in names.STICKINESS:  # dau_mau -> DAU/MAU
        columns.append(
            (name.upper().replace("_", "/"), [_pct(r["stickiness"][name]) for r in rows])
        )
    return columns


def _fit(doc: dict[str, Any], width: int) -> tuple[list[tuple[str, list[str]]], int, list[int]]:
    """The columns (compact numbers if the full ones don't fit), how many fit, widths.
    A community name may fold over lines, so it asks for at most 16 characters."""
    fixed = 2 + len(doc["windows"]) + 1  # names, windows, followers: always shown
    for compact in (False, True):
        columns = _columns(doc, compact)
        needed = [max(len(h), *(len(c) for c in cells)) + 2 for h, cells in columns]
        needed[1] = min(needed[1], 18)
        keep = len(columns)
        while keep > fixed and sum(needed[:keep]) + 2 > width:
            keep -= 1
        if sum(needed[:keep]) + 2 <= width:
            break
    return columns, keep, needed


def build_table(doc: dict[str, Any], width: int = 200) -> Any:
    """A rich table of the status document that fits ``width`` columns: names are never
    cut (a long community name folds), numbers never cut (shown as 1.23M when the full
    figures don't fit), the ratio columns left out first (said in the caption).
    Pure: tested without a terminal."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    columns, keep, needed = _fit(doc, width)
    # names come from producers: Text() shows them literally, a str would be
    # read as rich markup ("[/bold]" crashed the view, "[link=…]" made a hyperlink)
    title = Text(f"{doc['app_id']} — active users per window, as of {_when(doc['as_of_ms'])}")
    caption = None
    if keep < len(columns):
        hidden = ", ".join(h for h, _ in columns[keep:])
        caption = f"not shown for width: {hidden} (wider terminal, or --json)"
    table = Table(
        title=title, title_justify="left", caption=caption, caption_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )  # fmt: skip
    for i, (header, _cells) in enumerate(columns[:keep]):
        if i < 2:
            table.add_column(header, overflow="fold", min_width=needed[i] - 2)
        else:
            table.add_column(header, justify="right", no_wrap=True)
    for row in zip(*(cells for _h, cells in columns[:keep]), strict=True):
        table.add_row(Text(row[0]), Text(row[1]), *row[2:])
    return table


def build_lifecycle_table(doc: dict[str, Any]) -> Any:
    """``status --lifecycle``: one line per community and window (pure, like build_table)."""
    from rich.table import Table

    title = f"{doc['app_id']} — audience as of {_when(doc['as_of_ms'])}"
    table = Table(title=title, title_justify="left")
    for name in ("platform", "community", "window"):
        table.add_column(name)
    columns = (
        "active",
        "active followers",
        "non-followers",
        "new",
        "returning",
        "dormant",
        f"ghost followers ({names.GHOST_WINDOW})",
    )
    for name in columns:
        table.add_column(name, justify="right")
    for row in doc["communities"]:
        ghosts = row["ghost_followers"]
        for window in doc["windows"]:
            audience = row["audience"][window]
            table.add_row(
                row["platform"],
                row["community"],
                window,
                f"{row['active'][window]:,}",
                f"{audience['active_followers']:,}",
                f"{audience['non_follower_active']:,}",
                f"{audience['new_users']:,}",
                f"{audience['returning_users']:,}",
                f"{audience['dormant_users']:,}",
                "–" if ghosts is None else f"{ghosts:,}",
            )
    return table


def _table(args: argparse.Namespace, doc: dict[str, Any], width: int) -> Any:
    return build_lifecycle_table(doc) if args.lifecycle else build_table(doc, width)


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
    from rich.console import Console, Group
    from rich.text import Text

    try:
        doc = fetch_status(args)
    except Exception as exc:  # noqa: BLE001 - shown in the live view; retried next refresh
        return Text(f"waiting for Redis at {redact_url(args.redis_url)} ({exc})", style="yellow")
    notes = [Text(w, style="yellow") for w in warnings(doc)]
    return Group(_table(args, doc, Console().width), *notes)


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
        console = Console()
        console.print(_table(args, doc, console.width))
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
    parser.add_argument(
        "--limit", type=int, default=10, help="users, 1 to 1000 (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    _settings_args(parser)


def fetch_top(args: argparse.Namespace) -> dict[str, Any]:
    day = check_day(args.day) if args.day else today()
    if not 1 <= args.limit <= MAX_TOP_LIMIT:
        raise ValueError(f"--limit must be between 1 and {MAX_TOP_LIMIT}")
    return dict(
        asyncio.run(
            _with_client(
                args.redis_url,
                lambda c: read_top(c, args.app_id, args.community, day, args.limit, args.platform),
            )
        )
    )


def _known(args: argparse.Namespace) -> bool:
    """Whether the snapshots count the community (a quiet day has no top users)."""
    doc = asyncio.run(
        _with_client(
            args.redis_url,
            lambda c: read_status(c, args.app_id, [args.community], args.platform),
        )
    )
    return bool(doc["communities"])


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
    unknown = not any(entry["users"] for entry in doc["platforms"]) and not _known(args)
    if unknown:
        print(
            f"engagement-monitor top: unknown community {args.community!r} "
            f"(no snapshot of app id {args.app_id!r} in Redis counts it)",
            file=sys.stderr,
        )
    if args.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 1 if unknown else 0
    console = Console()
    if unknown:
        return 1
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
