"""``engagement-monitor watch``: a live terminal table of a worker's gauges.

Reads the worker's ``/metrics`` page (what Prometheus scrapes), so it shows
exactly what dashboards and alerts see. The table is built by a pure function of
the scraped samples, so it is tested without a terminal.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
from collections import defaultdict
from typing import Any

from streams import metric_names as names
from streams import security
from streams.durations import DEFAULT_WINDOWS
from streams.events import ALL_COMMUNITIES

Counts = dict[tuple[str, str], dict[str, float]]


def parse(text: str) -> tuple[Counts, dict[tuple[str, str], float]]:
    """(active {(platform, community): {window: n}}, followers) from exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    active: defaultdict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    followers: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == names.ACTIVE_USERS:
            for s in family.samples:
                active[(s.labels["platform"], s.labels["community"])][s.labels["window"]] = s.value
        elif family.name == names.FOLLOWERS:
            for s in family.samples:
                followers[(s.labels["platform"], s.labels["community"])] = s.value
    return dict(active), followers


def build_table(
    active: Counts,
    followers: dict[tuple[str, str], float],
    windows: list[str],
    top: int,
    title: str,
) -> Any:
    from rich.table import Table
    from rich.text import Text

    caption = f"columns {windows[0]}…{windows[-1]}: active users" if windows else None
    table = Table(title=Text(title), title_justify="left", caption=caption, caption_justify="left")
    table.add_column("platform", no_wrap=True, min_width=9)
    table.add_column("community", no_wrap=True, min_width=9)
    for window in windows:
        table.add_column(window, justify="right")
    table.add_column("followers", justify="right")
    table.add_column("DAU/fol.", justify="right")
    longest = windows[-1] if windows else ""
    keys = sorted(
        set(active) | set(followers),
        key=lambda k: (k[1] != ALL_COMMUNITIES, -active.get(k, {}).get(longest, 0), k),
    )
    for key in keys[:top]:
        counts = active.get(key, {})
        follow = followers.get(key, 0)
        dau = counts.get(names.DAU_WINDOW)
        ratio = f"{dau / follow:.1%}" if dau is not None and follow else "–"
        table.add_row(  # names literally, never as rich markup
            Text(key[0]),
            Text(key[1]),
            *(f"{counts.get(w, 0):,.0f}" for w in windows),
            f"{follow:,.0f}",
            ratio,
        )
    return table


def default_url() -> str:
    """The local worker's page, on EM_WEB_PORT as the worker itself reads it."""
    return f"http://127.0.0.1:{os.environ.get('EM_WEB_PORT') or 6066}/metrics"


def metrics_url(text: str) -> str:
    """``127.0.0.1:6099`` → ``http://127.0.0.1:6099/metrics``: scheme and path optional."""
    url = text.strip()
    if "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    if "/" not in rest:
        rest += "/metrics"
    return f"{scheme}://{rest}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        type=metrics_url,
        default=default_url(),
        help="the worker's metrics page; host:port is enough "
        "(default: %(default)s, from EM_WEB_PORT)",
    )
    parser.add_argument("--windows", default=DEFAULT_WINDOWS, help="columns to show")
    parser.add_argument("--top", type=int, default=12, help="rows (largest communities)")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh every N seconds")
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop after N seconds (default: until Ctrl-C)"
    )
    parser.add_argument("--once", action="store_true", help="print one table and exit")


def fetch(url: str) -> str:
    """One /metrics page; with EM_HTTP_TOKEN set the worker wants it as a bearer token."""
    request = urllib.request.Request(url)
    token = security.from_env().http_token
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - given URL
        return str(response.read().decode())


def render(args: argparse.Namespace) -> Any:
    from rich.text import Text

    try:
        active, followers = parse(fetch(args.url))
    except OSError as exc:
        return Text(f"waiting for the worker at {args.url} ({exc})", style="yellow")
    title = f"active users and followers — {time.strftime('%H:%M:%S')} — {args.url}"
    return build_table(
        active, followers, [w.strip() for w in args.windows.split(",")], args.top, title
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console()
    if args.once:
        shown = render(args)
        console.print(shown)
        return 0 if isinstance(shown, Table) else 1
    deadline = time.monotonic() + args.seconds if args.seconds else None
    with Live(render(args), console=console, refresh_per_second=4) as live:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(args.interval)
            live.update(render(args))
    return 0
