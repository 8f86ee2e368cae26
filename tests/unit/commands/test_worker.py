"""The worker's stop bound: a stop that cannot finish still ends the process.

The stuck stop is made the way one was seen to hang: a non-daemon thread that
never ends keeps the interpreter from exiting after the main thread is done.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

STUCK = """
import threading, time
from commands.worker import arm_stop_deadline
threading.Thread(target=time.sleep, args=(60,), name="never-ends").start()
arm_stop_deadline(0.5)
print("main thread done", flush=True)
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with this repository importable."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_stuck_stop_ends_at_the_bound_with_the_stacks_in_the_log() -> None:
    started = time.monotonic()
    done = run(STUCK)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert done.stdout == "main thread done\n"
    assert "not stopped 0.5s after the signal; exiting now" in done.stderr
    # every thread's stack: the main one waiting at exit for the one that never ends
    assert done.stderr.count("hread 0x") == 3 and " in _shutdown" in done.stderr
    assert took < 20  # the thread alone would have kept it for 60 s


# A Faust worker's sys.stderr: mode's logging proxy, which has no file descriptor.
STUCK_WITH_A_LOGGING_STDERR = (
    """
import io, sys
class Proxy(io.TextIOBase):
    def write(self, s):
        sys.__stderr__.write(s)
        return len(s)
    def fileno(self):
        raise NotImplementedError()
sys.stderr = Proxy()
"""
    + STUCK
)


def test_a_stuck_stop_ends_at_the_bound_when_stderr_has_no_file_descriptor() -> None:
    done = run(STUCK_WITH_A_LOGGING_STDERR)
    assert done.returncode == 1, done.stderr
    assert "not stopped 0.5s after the signal; exiting now" in done.stderr
    assert " in _shutdown" in done.stderr  # the stacks still reach the log


def test_a_process_that_ends_in_time_is_not_touched() -> None:
    done = run("from commands.worker import arm_stop_deadline\narm_stop_deadline(5)")
    assert (done.returncode, done.stderr) == (0, "")


def test_the_worker_tunes_the_collector_before_it_runs() -> None:
    """The thresholds and the freeze behind the worker's gc share (docs/benchmarks.md)."""
    import gc

    from commands import worker

    before = gc.get_threshold()
    try:
        worker.tune_collector()
        assert gc.get_threshold() == worker.GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what was built so far is out of collections
        assert worker.GC_THRESHOLDS[0] > before[0] and worker.GC_THRESHOLDS[2] > before[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
