"""The work of one fleet task, run on a Dask worker: ingest and analyze one trace, write its part.

Everything heavy happens here, so the client never holds a trace. A trace that cannot be read
or analyzed becomes a failure part (its stage and a one-line error), never an exception that
would stop the fleet.
"""

from __future__ import annotations

import socket
import time
import traceback
from pathlib import Path
from typing import Any

import polars as pl

from pvtrace import __version__
from pvtrace.errors import PvtraceError
from pvtrace.fleet import remote, store
from pvtrace.fleet.atomic import publish_dir, temp_sibling
from pvtrace.fleet.inputs import TraceInput
from pvtrace.outputs import atomic_file
from pvtrace.summary import TOTAL_KEYS


def one_line_error(exc: BaseException) -> str:
    """The error as one line: pvtrace's own message, or the exception type and its first line."""
    if isinstance(exc, PvtraceError):
        text = str(exc)
    else:
        first = (str(exc).strip().splitlines() or [""])[0]
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
        text = f"{type(exc).__name__}: {first}{at}"
    return " ".join(text.split())[:500]


def run_analysis(files: list[Path], options: dict[str, Any], stage: list[str]):
    """The analysis `pvtrace analyze --json` runs for these files and options (same code path)."""
    from pvtrace.analyze import analyze
    from pvtrace.analyze.run import analyze_parquet
    from pvtrace.ingest.load import is_one_parquet, load
    from pvtrace.trace import read_meta

    fmt = options.get("format", "auto")
    lock_kind = options.get("lock_kind")
    if is_one_parquet(files, fmt):
        read_meta(files[0])  # a file that is no pvtrace Parquet fails here, at the ingest stage
        stage[0] = "analyze"
        return analyze_parquet(files[0], lock_kind=lock_kind)
    trace = load(files, format=fmt, strict=bool(options.get("strict", False)))
    stage[0] = "analyze"
    return analyze(trace, lock_kind=lock_kind)


def trace_row(t: TraceInput, result, elapsed_s: float) -> pl.DataFrame:
    """The trace's row: name, files, labels, level, span, events, every total (null when
    unavailable), its fidelity, and the whole `--json` summary as text."""
    s = result.summary
    x = s.extra
    totals = {k: s.totals.get(k) for k in TOTAL_KEYS}
    waste = None
    if s.totals.get("waste_lhp_ns") is not None and s.totals.get("waste_lwp_ns") is not None:
        waste = s.totals["waste_lhp_ns"] + s.totals["waste_lwp_ns"]
    row = {
        "trace_id": t.trace_id,
        "trace": t.name,
        "files": list(t.files),
        **{f"label_{k}": v for k, v in t.labels.items()},
        "level": x.get("level"),
        "t_start": x.get("t_start"),
        "t_end": x.get("t_end"),
        "n_events": x.get("n_events"),
        "n_vcpus": x.get("n_vcpus"),
        "n_locks": x.get("n_locks"),
        "running_ns": x.get("running_ns"),
        "waste_ns": waste,
        "spin_waste_pct_of_running": x.get("spin_waste_pct_of_running"),
        "excluded_pct": x.get("excluded_pct"),
        **totals,
        **{f"fidelity_{k}": s.fidelity.get(k) for k in TOTAL_KEYS},
        "unavailable": [u.metric for u in s.unavailable],
        "summary_json": s.to_json(),
        "elapsed_s": elapsed_s,
        "worker": socket.gethostname(),
        "pvtrace_version": __version__,
    }
    schema = {
        "files": pl.List(pl.String()),
        "unavailable": pl.List(pl.String()),
        **{k: pl.String() for k in row if k.startswith(("label_", "fidelity_"))},
        **{k: pl.Int64() for k in (*TOTAL_KEYS, "t_start", "t_end", "n_events", "n_vcpus", "n_locks")},
        **{k: pl.Int64() for k in ("running_ns", "waste_ns")},
        **{k: pl.Float64() for k in ("spin_waste_pct_of_running", "excluded_pct", "elapsed_s")},
    }
    return pl.DataFrame([row], schema_overrides=schema)


def _tagged(t: TraceInput, df: pl.DataFrame) -> pl.DataFrame:
    return df.select(pl.lit(t.trace_id).alias("trace_id"), pl.lit(t.name).alias("trace"), pl.all())


def worst_incidents(result, n: int) -> pl.DataFrame:
    """The n LHP and n LWP incidents with the most waste, one table (kind: lhp or lwp; vcpu: the
    holder, or the next owner)."""
    from pvtrace.analyze.context import incident_union

    worst = [
        result.table(f"{kind}_incidents").sort("waste_ns", "dur", descending=True, nulls_last=True).head(n)
        for kind in ("lhp", "lwp")
    ]
    return incident_union(*worst).with_columns(pl.col("kind").str.to_lowercase())


def part_tables(t: TraceInput, result, elapsed_s: float, worst: int) -> dict[str, pl.DataFrame]:
    return {
        "trace": trace_row(t, result, elapsed_s),
        "locks": _tagged(t, result.table("waste_by_lock")),
        "vms": _tagged(t, result.table("waste_by_vm")),
        "incidents": _tagged(t, worst_incidents(result, worst)),
    }


def failure_row(t: TraceInput, stage: str, error: str) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "trace_id": t.trace_id,
                "trace": t.name,
                "files": list(t.files),
                "stage": stage,
                "error": error,
                "worker": socket.gethostname(),
                "pvtrace_version": __version__,
            }
        ],
        schema_overrides={"files": pl.List(pl.String())},
    )


def write_failure(fleet_dir: Path, t: TraceInput, stage: str, error: str) -> None:
    folder = store.failures_dir(fleet_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / f"{t.trace_id}.parquet", force=True) as tmp:
        failure_row(t, stage, error).write_parquet(tmp)


def analyze_trace(t: TraceInput, fleet_dir: str, options: dict[str, Any], worst: int) -> dict[str, Any]:
    """The fleet task: analyze one trace and publish its part folder; a failure part on error.
    Returns a small status (never the tables: they stay on the worker's side of the file system)."""
    root = Path(fleet_dir)
    stage = ["ingest"]
    t0 = time.perf_counter()
    try:
        with remote.localized(list(t.files)) as files:
            result = run_analysis(files, options, stage)
        stage[0] = "write"
        tables = part_tables(t, result, time.perf_counter() - t0, worst)
        del result
        final = store.part_dir(root, t.trace_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(final)
        tmp.mkdir()
        for name, df in tables.items():
            df.write_parquet(tmp / f"{name}.parquet")
        publish_dir(tmp, final)
        (store.failures_dir(root) / f"{t.trace_id}.parquet").unlink(missing_ok=True)
        return {"trace_id": t.trace_id, "status": "done", "elapsed_s": time.perf_counter() - t0}
    except Exception as exc:
        error = one_line_error(exc)
        write_failure(root, t, stage[0], error)
        return {"trace_id": t.trace_id, "status": "failed", "stage": stage[0], "error": error}
