"""``engagement-monitor worker``: run one Faust worker of the pipeline."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import faulthandler
import gc
import os
import sys
import threading
from typing import Any

from agents.kafka_security import current, failure
from streams import settings as settings_mod
from streams.effective import effective_settings, metrics_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a worker: validate events from the input topic (invalid ones go to the DLQ), "
        "keep exact rolling active-user windows and followers in a changelog-backed table, "
        "and serve Prometheus metrics on http://WEB_HOST:WEB_PORT/metrics. Start several "
        "workers with the same --app-id to share the work. Every flag can also be set by "
        "the environment variable shown in brackets."
    )
    settings_mod.add_arguments(parser)


def announce(settings: settings_mod.Settings, security: Any) -> None:
    """The effective settings (secrets redacted) and where the metrics are, first thing
    in the log, whatever the log level."""
    lines = [
        f"engagement-monitor worker: app {settings.app_id}, metrics {metrics_url(settings)}, "
        f"tables in {settings.app_datadir}",
        "engagement-monitor worker: effective settings (secrets redacted):",
        *(f"  {line}" for line in effective_settings(settings, security)),
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


#: Seconds a worker may take to stop after SIGTERM or Ctrl-C. A clean stop takes 1-5 s
#: here even at load 10 (leave the groups, finish or abort the transaction in flight,
#: close the stores). One that gets stuck — a stop racing the start-up (Faust's
#: recovery was seen starting after the stop began), a non-daemon consumer thread
#: that never ends and keeps the interpreter from exiting — would otherwise keep its
#: partitions from the other workers until a supervisor's SIGKILL.
STOP_BOUND_S = 8.0


def arm_stop_deadline(seconds: float = STOP_BOUND_S) -> threading.Timer:
    """Exit the process ``seconds`` from now unless it has exited by then, first
    dumping every thread's stack to the log (what the stop was stuck on).

    Safe for the state, like a SIGKILL (which the chaos test exercises): nothing a
    worker writes is visible before its transaction commits, and an open
    transaction is aborted when the partition's next owner initialises its
    producer (the fencing) or at the transaction timeout."""

    def expire() -> None:
        try:
            print(
                f"engagement-monitor worker: not stopped {seconds:g}s after the signal; "
                "exiting now (open transactions are aborted by the next owner's "
                "fencing). Where it was stuck:",
                file=sys.stderr,
                flush=True,
            )
            # fd 2, not sys.stderr: a Faust worker replaces sys.stderr with mode's
            # logging proxy, whose fileno() raises NotImplementedError — which once
            # ended this thread before os._exit and left the worker running (CI, stop 20)
            faulthandler.dump_traceback(file=2, all_threads=True)
        finally:
            os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True  # runs on while the interpreter waits for other threads
    timer.start()
    return timer


def _bounded_worker(app: Any, loglevel: str) -> Any:
    """Faust's worker, whose stop on SIGTERM/SIGINT is bounded by
    :func:`arm_stop_deadline` (Faust's ``Worker`` imports slowly: built on demand)."""
    from faust.worker import Worker

    class BoundedStopWorker(Worker):
        def _schedule_shutdown(self, signal: Any) -> None:  # mode's SIGTERM/SIGINT path
            if not self._signal_stop_time:  # the first signal only
                arm_stop_deadline()
            super()._schedule_shutdown(signal)

    return BoundedStopWorker(app, loglevel=loglevel)


#: gc thresholds of the worker: a young collection every 10,000 net allocations (not
#: 700) and a full one considered every 100 middle ones (not 10); see tune_collector.
GC_THRESHOLDS = (10_000, 10, 100)


def tune_collector() -> None:
    """Keep the cyclic garbage collector from taking a fifth of the worker's CPU.

    At full rate the worker keeps ~500,000 tracked objects (the gauge rows and their
    lifecycle tuples, Faust's and aiokafka's services) and replaces tens of thousands
    of them each second; with Python's default thresholds that set off a full
    collection about every second, 150 ms each: 5.1 s of 26.6 s of CPU in one
    pipeline_bench run, plus 1.3 s in the younger generations. Objects built before
    the first event (imports, the app) are frozen, out of every collection; with
    these thresholds a full collection comes every few million allocations, and
    short-lived cycles still die in the young ones. docs/benchmarks.md, session 7."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(args: argparse.Namespace) -> int:
    settings = settings_mod.from_args(args)
    # Faust and aiokafka (and agents.app, which imports them) take seconds to import:
    # only here, so that --help and argument errors stay instant.
    from aiokafka.errors import KafkaError

    from agents.app import build, prepare_topics
    from agents.store_guard import crash_advice  # imports Faust too

    announce(settings, current())

    try:  # the first connection: a wrong password or certificate fails here, in one line
        factor = asyncio.run(prepare_topics(settings))
    except KafkaError as exc:
        print(
            f"engagement-monitor worker: Kafka at {settings.kafka_bootstrap_servers}: "
            f"{failure(exc)}",
            file=sys.stderr,
        )
        return 1
    pipeline = build(dataclasses.replace(settings, replication_factor=factor))
    level = {"warning": "warn"}.get(settings.log_level, settings.log_level)
    worker = _bounded_worker(pipeline.app, level)
    # Faust's terminal spinner sets the root logger to DEBUG when the level is warn or
    # above, so every library debug call builds a LogRecord: a quarter of the CPU
    # at full rate. The spinner is decoration; drop it.
    worker.spinner = None
    tune_collector()
    try:
        worker.execute_from_commandline()
    finally:
        advice = crash_advice(pipeline.app.crash_reason, settings.app_datadir)
        if advice:
            print(advice, file=sys.stderr)
    return 0
