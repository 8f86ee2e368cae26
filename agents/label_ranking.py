"""The worker's label ranking: every :data:`agents.labels.REFRESH_S`, rank community
and platform names by activity over the state all workers share.

The shared state is the Redis read model: one snapshot per by-user partition,
written by whichever worker holds it. Summing them gives every worker the same
numbers, hence the same labels. Without Redis (``EM_READ_MODEL=off``, or Redis
unreachable) the worker ranks its own partitions, so labels keep being bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.labels import REFRESH_S, CommunityLabels
from agents.readmodel import connect, read_snapshots, sum_snapshots
from streams.gauges import gauge_rows

log = logging.getLogger(__name__)


async def shared_counts(redis_url: str, app_id: str) -> Any:
    """The sum of every partition's snapshot (None: none readable)."""
    client = connect(redis_url)
    try:
        snapshots = await read_snapshots(client, app_id)
    except Exception as exc:  # noqa: BLE001 - fall back to the local state
        log.debug("labels: cannot read the snapshots: %s", exc)
        return None
    finally:
        await client.aclose()
    return sum_snapshots(snapshots) if snapshots else None


def install(pipeline: Any, labels: CommunityLabels) -> None:
    """A Faust task: rank at start (snapshots of the previous run are still in Redis,
    so the first counts go to the right labels), then every :data:`REFRESH_S`."""
    settings, state, clock = pipeline.settings, pipeline.state, pipeline.clock
    windows = settings.window_ms
    longest = max(windows, key=lambda w: windows[w])

    async def refresh() -> None:
        counts = None
        if settings.read_model == "on":
            counts = await shared_counts(settings.redis_url, settings.app_id)
        if counts is None:
            now = clock.now_ms()
            counts = gauge_rows(list(state.partitions.values()), now, {longest: windows[longest]})
        labels.rank_counts(counts.active, counts.followers, longest)

    @pipeline.app.task
    async def rank_labels() -> None:
        while True:
            try:
                await refresh()
            except Exception as exc:  # noqa: BLE001 - labels keep their last ranking
                log.warning("labels: ranking failed: %s", exc)
            await asyncio.sleep(REFRESH_S)
