"""The community label cap: the first N communities keep their names."""

from __future__ import annotations

from agents.labels import CommunityLabels


def test_first_n_keep_their_names_the_rest_are_other() -> None:
    labels = CommunityLabels(cap=2)
    assert [labels(c) for c in ["a", "b", "c", "a", "*", "d", "b"]] == [
        "a",
        "b",
        "_other",
        "a",
        "*",  # the all-communities total is never capped nor counted
        "_other",
        "b",
    ]
    assert len(labels) == 2


def test_zero_cap_names_nothing() -> None:
    labels = CommunityLabels(cap=0)
    assert (labels("a"), labels("*"), len(labels)) == ("_other", "*", 0)
