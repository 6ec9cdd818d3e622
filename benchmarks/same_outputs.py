"""Whether two checkouts of pvtrace give the same analysis: every table (values, dtypes, row
order) and the summary of analyze_parquet() on each input, each checkout in its own process.

    python benchmarks/same_outputs.py --base /path/to/main-checkout INPUT.parquet ...
    python benchmarks/same_outputs.py --base /work/main --budget 64M benchmarks/.data/analyze-base.parquet

The other checkout is this file's own. Speed work changes how tables are computed, never what
they hold: run this on big and small inputs (presets, views, lost events, stacks) before
claiming a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

HERE = Path(__file__).resolve().parent.parent

DUMP = """
import json, sys
from pathlib import Path
from pvtrace.analyze.partitioned import parse_budget
from pvtrace.analyze.run import analyze_parquet
out, budget = Path(sys.argv[1]), sys.argv[2]
for i, path in enumerate(sys.argv[3:]):
    result = analyze_parquet(path, memory_budget=parse_budget(budget) if budget else None)
    d = out / str(i)
    d.mkdir()
    for name, table in result.tables.items():
        table.write_parquet(d / f"{name}.parquet")
    (d / "tables.json").write_text(json.dumps(list(result.tables)))
    (d / "summary.json").write_text(json.dumps(result.summary.to_dict(), default=repr))
"""


def dump(checkout: Path, inputs: list[str], out: Path, budget: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    subprocess.run([sys.executable, "-c", DUMP, str(out), budget, *inputs], check=True, env=env, cwd=out)


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two dumps of one input (empty: the same)."""
    names = json.loads((a / "tables.json").read_text())
    if names != json.loads((b / "tables.json").read_text()):
        return ["the tables listed"]
    found = []
    for name in names:
        try:
            assert_frame_equal(
                pl.read_parquet(a / f"{name}.parquet"),
                pl.read_parquet(b / f"{name}.parquet"),
                check_exact=True,
            )
        except AssertionError as e:
            found.append(f"{name}: {str(e).splitlines()[0]}")
    if json.loads((a / "summary.json").read_text()) != json.loads((b / "summary.json").read_text()):
        found.append("summary")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the other checkout (its repository root)")
    ap.add_argument("--budget", default="", help="memory budget (analyze a group of VMs at a time)")
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args()
    inputs = [str(Path(p).resolve()) for p in args.inputs]
    with tempfile.TemporaryDirectory() as tmp:
        dumps = [Path(tmp) / "base", Path(tmp) / "this"]
        for checkout, out in zip((args.base, HERE), dumps, strict=True):
            out.mkdir()
            dump(checkout, inputs, out, args.budget)
        bad = 0
        for i, path in enumerate(inputs):
            found = differences(dumps[0] / str(i), dumps[1] / str(i))
            bad += bool(found)
            rows = sum(
                pl.scan_parquet(p).select(pl.len()).collect().item()
                for p in (dumps[0] / str(i)).glob("*.parquet")
            )
            print(
                f"{Path(path).name}: {'same' if not found else 'DIFFERENT: ' + '; '.join(found)} ({rows:,} rows)"
            )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
