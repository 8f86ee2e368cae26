"""The exposition text of the per-community families, re-rendered only where it changed.

At 10,000 communities the capped label set still gives ~80,000 samples, and
prometheus_client spends a few microseconds formatting each one at every scrape.
:class:`GaugeText` keeps one rendered line per sample and re-renders the lines of
the labelled keys whose sums changed (:class:`agents.labelled_totals.LabelledTotals`)
and of the event counters whose value moved; a scrape joins the lines. The format
is prometheus_client's (same escaping, same number formatting, ``app`` label
first), so a parser reads the same samples as from ``generate_latest``
(tests/unit/agents/test_gauge_text.py compares them). Series appear in the order
they were first seen, not sorted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from prometheus_client.utils import floatToGoString

from agents.labelled_totals import LabelledTotals
from streams import metric_names as names
from streams.state import Lifecycle

PC = tuple[str, str]
EventKey = tuple[str, str, str]  # (platform, community, type)

#: The per-community gauge families, in the order they are written.
GAUGES = (names.ACTIVE_USERS, *names.LIFECYCLE.values(), names.FOLLOWERS)


def escape(value: str) -> str:
    """A label value as the text format writes it (prometheus_client's rules)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def header(name: str, kind: str) -> str:
    doc = names.HELP[name].replace("\\", r"\\").replace("\n", r"\n")
    sample = name + "_total" if kind == "counter" else name
    return f"# HELP {sample} {doc}\n# TYPE {sample} {kind}\n"


class GaugeText:
    """Rendered lines per family; :meth:`text` is what ``/metrics`` serves for them."""

    def __init__(self, totals: LabelledTotals, app_id: str | None = None) -> None:
        self.totals = totals
        self.app = "" if app_id is None else f'app="{escape(app_id)}",'
        self.lines: dict[str, dict[PC, str]] = {name: {} for name in GAUGES}
        # per family: labelled keys whose lines are out of date. A scrape renders only
        # the families it serves (a probe's ``name[]`` asks for one of six), and a
        # family's keys wait until a scrape asks for it.
        self._stale: dict[str, dict[PC, None]] = {name: {} for name in GAUGES}
        self._label_text: dict[PC, str] = {}  # labelled key -> its escaped labels
        self._headers = {name: header(name, "gauge") for name in GAUGES}
        # input partition -> {(platform, community, type): (value, its line)}
        self._events: dict[int, dict[tuple[str, str, str], tuple[int, str]]] = {}
        self._events_header = header(names.EVENTS, "counter")

    def text(
        self,
        now_ms: int | None,
        events: Mapping[int, Mapping[EventKey, int]],
        only: Collection[str] | None = None,
    ) -> str:
        """The gauge families at ``now_ms`` and the ``engagement_events_total`` counter
        of each input partition in ``events`` (label ``partition``); ``only``: just the
        families of these names (a scrape's ``name[]``). The sums are brought up to
        date either way, so a filtered scrape shows the same values as a whole one."""
        self.totals.update(now_ms)
        dirty = self.totals.take_dirty()
        parts = []
        for name in GAUGES:
            stale = self._stale[name]
            if dirty:
                stale.update(dirty)
            if only is None or name in only:
                if stale:
                    self._render(name, stale)
                    stale.clear()
                parts.append(self._headers[name])
                parts.extend(self.lines[name].values())
        for partition in [p for p in self._events if p not in events]:
            del self._events[partition]  # no longer owned: its series go
        if only is None or names.EVENTS_TOTAL in only or names.EVENTS in only:
            parts.append(self._events_header)
            for partition, counts in sorted(events.items()):
                parts.extend(self._event_lines(partition, counts))
        return "".join(parts)

    def _render(self, name: str, keys: Iterable[PC]) -> None:
        """The lines of family ``name`` for ``keys``, from their sums now (absent
        sums: no lines)."""
        t, lines = self.totals, self.lines[name]
        if name == names.FOLLOWERS:
            for key in keys:
                followers = t.followers.get(key)
                if followers is None:
                    lines.pop(key, None)
                else:
                    lines[key] = f"{name}{{{self._labels(key)}}} {_number(followers)}\n"
            return
        field = _LIFECYCLE_FIELD.get(name)
        lifecycle = t.lifecycle if field is not None else {}  # read once: it moves what is due
        for key in keys:
            if field is None:
                counts: Mapping[str, int] | None = t.active.get(key)
            else:
                audience = lifecycle.get(key)
                counts = None if audience is None else _field(audience, field)
            if counts is None:
                lines.pop(key, None)
            else:
                lines[key] = _windowed(name, self._labels(key), counts)

    def _labels(self, key: PC) -> str:
        text = self._label_text.get(key)
        if text is None:
            if len(self._label_text) >= _LABEL_TEXTS:  # names re-ranked out over time
                self._label_text.clear()
            text = self._label_text[key] = (
                f'{self.app}platform="{escape(key[0])}",community="{escape(key[1])}"'
            )
        return text

    def _event_lines(self, partition: int, events: Mapping[EventKey, int]) -> list[str]:
        """One line per counter series; only moved values are formatted again."""
        cache = self._events.setdefault(partition, {})
        app, name, label = self.app, names.EVENTS_TOTAL, f'partition="{partition}"'
        out = []
        for key, n in events.items():
            hit = cache.get(key)
            if hit is None or hit[0] != n:
                platform, community, kind = key
                hit = cache[key] = (
                    n,
                    f'{name}{{{app}platform="{escape(platform)}",community="{escape(community)}",'
                    f'type="{escape(kind)}",{label}}} {_number(n)}\n',
                )
            out.append(hit[1])
        return out


def _field(audience: Mapping[str, Lifecycle], i: int) -> dict[str, int]:
    return {window: n[i] for window, n in audience.items()}


def _windowed(name: str, labels: str, counts: Mapping[str, int]) -> str:
    return "".join(
        f"{name}{{{labels},{_window_label(window)}}} {_number(n)}\n" for window, n in counts.items()
    )


#: escaped label texts kept at most (a key's, until the labels churn past it)
_LABEL_TEXTS = 100_000

_WINDOW_LABELS: dict[str, str] = {}


def _window_label(window: str) -> str:
    text = _WINDOW_LABELS.get(window)
    if text is None:
        text = _WINDOW_LABELS[window] = f'window="{escape(window)}"'
    return text


def _number(n: int) -> str:
    """``floatToGoString(n)`` (what prometheus_client writes) for a count: a plain int
    below a million is written as ``n.0`` (Go's format switches to exponents from
    there; left to prometheus_client)."""
    if type(n) is int and 0 <= n < 1_000_000:
        return f"{n}.0"
    return floatToGoString(n)


#: a lifecycle family's name -> its field in :class:`streams.state.Lifecycle`
_LIFECYCLE_FIELD = {name: i for i, name in enumerate(names.LIFECYCLE.values())}
