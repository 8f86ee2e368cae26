"""Generate the dashboards' JSON: ``python -m grafana.build [--out DIR] [--check]``.

Output is stable: keys sorted, two-space indent, one trailing newline, so the
committed files in grafana/dashboards-json/ only change when a dashboard does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from grafana import DASHBOARDS_JSON_DIR
from grafana.dashboards import DASHBOARDS


def render(dashboard: Dashboard) -> str:
    """The dashboard as the text of its JSON file."""
    return json.dumps(dashboard, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def render_all() -> dict[str, str]:
    """File name -> file text, for every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def write_all(out_dir: Path) -> list[Path]:
    """Write every dashboard into out_dir; remove stale *.json there. Returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    for stale in out_dir.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check(out_dir: Path) -> list[str]:
    """Names of the files in out_dir that differ from a fresh build (or are missing/extra)."""
    rendered = render_all()
    problems = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from the generator")
    for extra in sorted(out_dir.glob("*.json")):
        if extra.name not in rendered:
            problems.append(f"{extra.name}: not produced by the generator")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.build", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=DASHBOARDS_JSON_DIR, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; fail if the files are out of date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m grafana.build", file=sys.stderr)
            return 1
        return 0
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
