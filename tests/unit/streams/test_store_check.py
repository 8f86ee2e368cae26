"""When a local table store is no longer a copy of its changelog partition."""

from __future__ import annotations

import pytest

from streams.store_check import ChangelogPartition, Marker, stale_reason

TOPIC = "app-users-changelog"
OLD, NEW = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def log(start: int, end: int, topic_id: str | None = NEW) -> ChangelogPartition:
    return ChangelogPartition(TOPIC, 1, start, end, topic_id)


@pytest.mark.parametrize(
    ("stored", "marker", "changelog"),
    [
        (None, None, log(0, 0)),  # nothing applied: nothing to judge
        (None, Marker(TOPIC, OLD), log(5, 9)),  # ... whatever the marker says
        (9, Marker(TOPIC, NEW), log(0, 10)),  # up to date
        (4, Marker(TOPIC, NEW), log(0, 10)),  # behind: recovery reads 5..9
        (4, Marker(TOPIC, NEW), log(5, 10)),  # start right after the store: no gap
        (4, None, log(0, 10)),  # no marker (a store from before markers): offsets only
        (4, Marker(TOPIC, OLD), log(0, 10, None)),  # the broker gives no id: offsets only
        (4, Marker(TOPIC, None), log(0, 10)),  # marker without an id: offsets only
    ],
)
def test_a_store_that_fits_its_changelog_is_kept(
    stored: int | None, marker: Marker | None, changelog: ChangelogPartition
) -> None:
    assert stale_reason(stored, marker, changelog) is None


@pytest.mark.parametrize(
    ("stored", "marker", "changelog", "reason"),
    [
        (1263, None, log(0, 0), "the store's offset 1263 is beyond the changelog's end (empty)"),
        (
            10,
            None,
            log(0, 10),
            "the store's offset 10 is beyond the changelog's end (last offset 9)",
        ),
        (
            4,
            None,
            log(6, 10),
            "the changelog starts at offset 6: records 5..5 after the store's offset 4 "
            "were deleted",
        ),
        (
            4,
            Marker(TOPIC, OLD),
            log(0, 10),
            f"the changelog topic was recreated (topic id {OLD} when the store was filled, "
            f"{NEW} now)",
        ),
        (
            4,
            Marker("other-users-changelog", NEW),
            log(0, 10),
            "the store was filled from another changelog topic (other-users-changelog)",
        ),
    ],
)
def test_a_stale_store_is_named_with_the_reason(
    stored: int, marker: Marker | None, changelog: ChangelogPartition, reason: str
) -> None:
    assert stale_reason(stored, marker, changelog) == reason
