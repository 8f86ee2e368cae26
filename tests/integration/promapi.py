"""A small client of Prometheus' HTTP API for integration tests.

Unlike ``Stack.query`` it returns the whole answer (so a test can tell "valid query, no
series" from an error), takes an explicit evaluation time, and covers range queries,
label values, rules and targets::

    api = PromAPI(stack.prometheus_url)
    api.instant("up", at=t)            # -> the `result` list (status checked)
    api.range("rate(x[1m])", t - 180, t, step=15)
    api.label_values("platform", match="engagement_active_users", start=t - 60, end=t)
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Series = dict[str, Any]  # {"metric": {...}, "value": [t, "v"]} or {"metric", "values"}


class PromError(AssertionError):
    """Prometheus answered with status "error" (bad query, timeout, ...)."""


@dataclass(frozen=True)
class PromAPI:
    base_url: str
    timeout: float = 15.0

    def get(self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]]) -> Any:
        """GET /api/v1/<path>; the `data` member of a successful answer."""
        query = urllib.parse.urlencode(params if isinstance(params, list) else list(params.items()))
        url = f"{self.base_url}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the body says why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromError(
                f"{path} {dict(params)!r}: {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[Series]:
        """/api/v1/query at time `at` (default: now)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.get("query", params)
        if data["resultType"] == "scalar":  # e.g. time(): one unlabelled "series"
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def range(self, expr: str, start: float, end: float, step: float = 15.0) -> list[Series]:
        """/api/v1/query_range over [start, end]."""
        data = self.get(
            "query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": step},
        )
        return list(data["result"])

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """/api/v1/label/<label>/values restricted to series matching `match`."""
        params = [("match[]", match), ("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        return list(self.get(f"label/{label}/values", params))

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.get("rules", {})["groups"])

    def wait_rules_evaluated(self, after: float, timeout: float = 60.0) -> None:
        """Wait until every rule group was last evaluated after `after` (epoch s)."""
        deadline = time.monotonic() + timeout
        while True:
            last = {g["name"]: rfc3339(g["lastEvaluation"]) for g in self.rule_groups()}
            if last and min(last.values()) > after:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"rule groups not evaluated after {after}: {last}")
            time.sleep(0.5)

    def wait(
        self,
        expr: str,
        until: Callable[[list[Series]], bool] = bool,
        timeout: float = 60.0,
        what: str = "",
    ) -> list[Series]:
        """Poll an instant query until `until(result)`; AssertionError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.instant(expr)
            if until(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what or 'Prometheus'}: {expr!r} still {result!r} after {timeout:.0f}s"
                )
            time.sleep(0.5)


def rfc3339(text: str) -> float:
    """Epoch seconds of Prometheus' timestamps (nanosecond fractions, Z or an offset)."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    head, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(head + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + float(f"0.{fraction or 0}")


def value(series: Series) -> float:
    """The value of an instant-query series (NaN and ±Inf included)."""
    return float(series["value"][1])


def values(series: Series) -> list[float]:
    """The values of a range-query series."""
    return [float(v) for _, v in series["values"]]


def finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
