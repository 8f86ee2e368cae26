"""``pipeline_bench --before-state``: the old state behind today's pipeline shows the
same active counts as the oracle.

The shim (bench/pipeline_bench.STATE_SHIM) adapts 4529a3b's streams/state.py to the
API streams/live_counts.py calls; a shim that reported too few keys, or kept a gone
one, would make the "before" worker publish wrong gauges and the comparison unfair.
The check runs in a subprocess whose ``streams`` is the baseline tree's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

from bench.pipeline_bench import state_baseline

SCRIPT = textwrap.dedent(
    """
    import random
    from streams.events import DEFAULT_ACTIVE_TYPES, EVENT_TYPES
    from streams.live_counts import LiveCounts
    from streams.state import SEP, WorkerState
    from streams.topics import partition_for_user
    from tests.oracle import expected_active

    windows = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
    rng, state, events = random.Random(7), WorkerState(DEFAULT_ACTIVE_TYPES), []
    for p in range(2):
        state.assign(p)
    live, now = LiveCounts(state, windows), 1_800_000_000_000
    # no follows: a follower change would make LiveCounts recompute a key by itself
    kinds = sorted(EVENT_TYPES - {"follow", "unfollow"})

    def shown():
        out = {}
        for p in live.partitions():
            for pc, row in live.rows(p).items():
                if row.active is not None:
                    total = out.setdefault(pc, dict.fromkeys(windows, 0))
                    for label, n in row.active.items():
                        total[label] += n
        return out

    for step in range(12):
        for _ in range(80):
            user, community = f"u{rng.randrange(40)}", f"c{rng.randrange(4)}"
            ts = now - rng.randrange(2 * 86_400_000)
            kind = rng.choice(kinds)
            state.partitions[partition_for_user(user, 2)].apply("tw", community, user, ts, kind)
            events.append({"platform": "tw", "community": community, "user_id": user,
                           "ts_ms": ts, "type": kind})
        if step == 8:  # community c0 deleted everywhere (expiry): its key must go
            assert ("tw", "c0") in shown()
            for part in state.partitions.values():
                for key in [k for k in part.records if k.split(SEP)[1] == "c0"]:
                    part.delete(key)
            events = [e for e in events if e["community"] != "c0"]
        now += rng.choice([0, 60_000, 3_600_000])
        live.update(now)
        assert live.rows(0) or live.rows(1)
        assert shown() == expected_active(events, now, windows), step
        assert not any(row.lifecycle for p in (0, 1) for row in live.rows(p).values())
    for part in state.partitions.values():  # what the changelog writer reads
        assert all(part.records.wire(k) == part.records[k].to_wire() for k in part.records)
        assert part.records.wire(f"tw{SEP}c9{SEP}nobody") is None
    # what the rebuild after an assignment calls (agents.state_stage.rebuild_stepwise)
    rebuilt = WorkerState(DEFAULT_ACTIVE_TYPES)
    for p, part in state.partitions.items():
        fresh = rebuilt.assign(p)
        items = [(k, part.records.wire(k)) for k in part.records] + [(f"tw{SEP}c1{SEP}x", None)]
        assert fresh.load_wire(items) == len(part.records)
        assert list(fresh.flush_steps(100)) and fresh.records == part.records
    assert rebuilt.active_counts(now, windows) == state.active_counts(now, windows)
    print("ok", len(events))
    """
)


def test_before_state_counts_equal_the_oracle() -> None:
    tree = state_baseline("4529a3b")
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=tree,
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[0] == "ok"


def test_cpu_seconds_counts_this_process_s_work() -> None:
    """The bench's CPU per event reads /proc: half a second of busy loop shows as
    about that much CPU time (ticks of 10 ms; a loaded machine takes wall time, not
    CPU time)."""
    import os
    import time

    from bench.pipeline_bench import cpu_seconds

    before, start = cpu_seconds(os.getpid()), time.process_time()
    while time.process_time() - start < 0.5:
        pass
    assert 0.4 <= cpu_seconds(os.getpid()) - before <= 0.7
