"""The ``engagement-monitor`` commands and side processes (CLI, replay, rebuild,
backfill, simulate, produce, status/top, api, alerts-webhook, demo, watch).

Imports run one way: commands -> agents -> streams.
"""
