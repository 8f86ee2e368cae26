"""A cap on distinct community label values.

Community names come from input, so a hostile or buggy producer could create
millions of Prometheus series. The first ``cap`` communities a worker sees keep
their names; later ones are reported under ``community="_other"``. The state keeps
every community exactly — only the exposition is capped.
"""

from __future__ import annotations

from streams.events import ALL_COMMUNITIES, OTHER_COMMUNITY


class CommunityLabels:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._admitted: set[str] = set()

    def __call__(self, community: str) -> str:
        if community == ALL_COMMUNITIES or community in self._admitted:
            return community
        if len(self._admitted) < self.cap:
            self._admitted.add(community)
            return community
        return OTHER_COMMUNITY

    def __len__(self) -> int:
        return len(self._admitted)
