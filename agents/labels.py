"""Which community and platform names keep their own Prometheus series.

Names come from input, so a hostile or buggy producer could create millions of
series. The state keeps every community exactly; only the exposition is capped:

* names listed in the optional allowlist file (``EM_LABEL_ALLOWLIST``) always keep
  their series;
* of the others, the ``cap`` most *active* keep theirs — ranked by users active in
  the longest window plus followers (ties by name) — and the rest are summed under
  ``_other``;
* while fewer than ``cap`` are admitted (before the first ranking, or below the
  cap), a new name is admitted when first seen, until the next ranking.

Why activity, and why it is the same on every worker: a junk name carries the users
its sender invents, a real community its real audience, so junk sent after a restart
cannot push a real community out (the old "first N seen" rule could). The ranking is
computed from the Redis snapshots of *every* partition (what ``status`` reads), so
all workers of an app rank the same numbers and agree on the labels; a community's
series therefore sums correctly over workers. With the read model off (or Redis
unreachable before any ranking) a worker ranks its own partitions, which may differ
near the cap between workers (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from streams.events import ALL_COMMUNITIES, OTHER_COMMUNITY

#: How often a worker re-ranks (seconds).
REFRESH_S = 10.0

PC = tuple[str, str]  # (platform, community)


class LabelCap:
    """Maps a name to its label: itself if allowlisted or admitted, else ``_other``."""

    def __init__(self, cap: int, allowlist: Iterable[str] = ()) -> None:
        self.cap = cap
        self.allowlist = frozenset(allowlist)
        self._admitted: set[str] = set()
        #: counts the rankings: a name's label can only change when this does
        self.generation = 0

    def __call__(self, name: str) -> str:
        if name in self._admitted or name in self.allowlist or name == ALL_COMMUNITIES:
            return name
        if len(self._admitted) < self.cap:  # room left: admitted until the next ranking
            self._admitted.add(name)
            return name
        return OTHER_COMMUNITY

    def rank(self, activity: Mapping[str, int]) -> None:
        """Admit the ``cap`` most active names outside the allowlist (ties by name);
        a function of ``activity`` alone, so equal inputs give equal labels."""
        candidates = [
            name for name in activity if name not in self.allowlist and name != ALL_COMMUNITIES
        ]
        candidates.sort(key=lambda name: (-activity[name], name))
        self._admitted = set(candidates[: self.cap])
        self.generation += 1

    @property
    def admitted(self) -> frozenset[str]:
        return frozenset(self._admitted)

    def __len__(self) -> int:
        return len(self._admitted)


class CommunityLabels(LabelCap):
    """The community cap; ``platforms`` is the platform cap that goes with it."""

    def __init__(
        self, cap: int, allowlist: Iterable[str] = (), platforms: LabelCap | None = None
    ) -> None:
        super().__init__(cap, allowlist)
        self.platforms = platforms if platforms is not None else LabelCap(cap=10**9)

    def generations(self) -> tuple[int, int]:
        """Changes whenever either cap was re-ranked."""
        return self.generation, self.platforms.generation

    def rank_counts(
        self, active: Mapping[PC, Mapping[str, int]], followers: Mapping[PC, int], window: str
    ) -> None:
        """Rank communities and platforms by users active in ``window`` + followers."""
        communities, platforms = activity(active, followers, window)
        self.rank(communities)
        self.platforms.rank(platforms)


def activity(
    active: Mapping[PC, Mapping[str, int]], followers: Mapping[PC, int], window: str
) -> tuple[dict[str, int], dict[str, int]]:
    """({community: active users + followers, summed over platforms}, {platform: the
    same of its "*" row}). Every name present appears, with 0 if it has neither."""
    communities: dict[str, int] = {}
    platforms: dict[str, int] = {}
    pairs = {pc: counts.get(window, 0) for pc, counts in active.items()}
    for pc, n in followers.items():
        pairs[pc] = pairs.get(pc, 0) + n
    for (platform, community), n in pairs.items():
        if community == ALL_COMMUNITIES:
            platforms[platform] = platforms.get(platform, 0) + n
        else:
            communities[community] = communities.get(community, 0) + n
    return communities, platforms


def worker_labels(settings: Any) -> CommunityLabels:
    """The label caps a worker (or backfill, or audit) builds from its settings."""
    allowlist = read_allowlist(settings.label_allowlist)
    return CommunityLabels(
        settings.community_cap, allowlist, LabelCap(settings.platform_cap, allowlist)
    )


def read_allowlist(path: str) -> frozenset[str]:
    """Names from a file, one a line (blank lines and ``#`` comments ignored)."""
    if not path:
        return frozenset()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))
