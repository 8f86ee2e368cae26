"""``recovery_bench``'s truth — the 30d active users and followers it waits for — equals
the test oracle's over the very events it produces, summed over workers that each
count their own events at their own event clock (the newest of their partitions'
events; the split here is arbitrary). A truth that counted one user too many or too
few would make the bench wait until its timeout, or stop before the survivor was exact.
"""

from __future__ import annotations

import orjson

from bench.recovery_bench import payloads, truth
from tests.oracle import event_clock, expected_active, expected_followers

NOW_MS = 1_800_000_000_000


def test_the_truth_equals_the_oracle_summed_over_workers_with_their_own_clocks() -> None:
    events = [orjson.loads(p) for p in payloads(2_000, 7, NOW_MS)]
    active, followers = truth(2_000, 7)
    for workers in (1, 2, 3):
        summed: dict = {}
        for w in range(workers):
            own = events[w::workers]
            clock = event_clock(own)
            assert clock is not None
            for key, counts in expected_active(own, clock, {"30d": 30 * 86_400_000}).items():
                summed[key] = summed.get(key, 0) + counts["30d"]
        assert active == {k: n for k, n in summed.items() if n}
    assert followers == {k: n for k, n in expected_followers(events).items() if n}
    assert active[("twitter", "*")] == 1_600 and followers[("twitter", "*")] == 400
