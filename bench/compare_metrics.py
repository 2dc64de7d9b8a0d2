"""Whether two evaluations gave the same scores: every value of ``reports/metrics.json`` at a git
revision against the working tree's, run ids and timings aside.

    python bench/compare_metrics.py REV [--file reports/metrics.json] [--atol 1e-4]

Prints the number of differing values and the first 30 (path and both values), and the largest
difference between two numbers; exits 1 when any differ. Used to show that a pure restructuring
left the default pipeline's scores unchanged (the default: exactly equal), and with ``--atol``
that a run on another machine, where only float rounding differs, gave the same scores within
that absolute tolerance.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

IGNORED = frozenset({"mlflow_run_id", "seconds", "model_seconds", "records_file"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def differences(a: Any, b: Any, path: tuple = ()) -> list[tuple[str, Any, Any]]:
    """Every leaf where ``a`` and ``b`` differ, as (path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            if key in IGNORED:
                continue
            found += differences(a.get(key), b.get(key), (*path, key))
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, (*path, i))
        ]
    return [] if a == b else [("/".join(map(str, path)), a, b)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare the working tree's file with")
    parser.add_argument("--file", default="reports/metrics.json")
    parser.add_argument(
        "--atol", type=float, default=0.0, help="two numbers this close count as equal"
    )
    args = parser.parse_args()
    before = json.loads(subprocess.check_output(["git", "show", f"{args.rev}:{args.file}"]))
    after = json.loads(Path(args.file).read_text())
    exact = differences(before, after)
    numeric = [(abs(x - y), path) for path, x, y in exact if _number(x) and _number(y)]
    found = [
        d for d in exact if not (_number(d[1]) and _number(d[2]) and abs(d[1] - d[2]) <= args.atol)
    ]
    within = f" (beyond {args.atol:g})" if args.atol else ""
    print(
        f"{len(found)} differing values{within} between {args.rev}:{args.file} and the working tree"
    )
    if numeric:
        largest, where = max(numeric)
        print(f"largest difference between two numbers: {largest:.3g} at {where}")
    for path, old, new in found[:30]:
        print(f"  {path}: {old!r} -> {new!r}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
