"""``engagement-monitor top``: the most engaged users of a community (see commands/status.py)."""

from commands.status import add_top_arguments as add_arguments
from commands.status import run_top as run

__all__ = ["add_arguments", "run"]
