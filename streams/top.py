"""``engagement-monitor top``: the most engaged users of a community (see streams/status.py)."""

from streams.status import add_top_arguments as add_arguments
from streams.status import run_top as run

__all__ = ["add_arguments", "run"]
