"""``engagement-monitor pseudonym ID...``: the pseudonym the worker stores for a user id.

With ``EM_USER_ID_KEY`` set, the worker keeps and shows (``top``, the API, Redis, the
changelog) only keyed HMACs of user ids. An operator who holds the key and has a
known id — a support request, an erasure request — finds its records with this;
the reverse (pseudonym → id) is impossible by design, without trying candidate ids.
"""

from __future__ import annotations

import argparse

from streams import security


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", metavar="ID", help="user ids, as in the events")
    parser.add_argument_group(
        "security (environment only; values never shown)", security.describe(["worker"])
    )


def run(args: argparse.Namespace) -> int:
    convert = security.pseudonymiser(security.from_env().user_id_key)
    if convert is None:
        raise ValueError(
            "EM_USER_ID_KEY (or EM_USER_ID_KEY_FILE) is not set: ids are not pseudonymised"
        )
    for user_id in args.ids:
        print(f"{user_id}\t{convert(user_id)}")
    return 0
