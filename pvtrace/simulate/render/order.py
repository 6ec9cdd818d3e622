"""One numbering of a run's events shared by every line a renderer prints.

Host and guest records of a merged report come from different events; giving
both the position of their event in the canonical (ts, seq) order lets them
interleave exactly as the run happened.
"""

from __future__ import annotations

import polars as pl

from pvtrace.simulate.render.identities import vm_names
from pvtrace.trace import Trace


def numbered(trace: Trace) -> pl.DataFrame:
    """The events in canonical order with `ord` (their position) and `vmi` (the VM's index)."""
    events = trace.events
    if not _in_canonical_order(events):
        events = events.sort("ts", "seq", maintain_order=True)
    names = vm_names(trace)
    vmi = (
        pl.col("vm")
        .cast(pl.String)
        .replace_strict(names, list(range(len(names))), default=None, return_dtype=pl.Int32)
    )
    return events.with_row_index("ord").with_columns(pl.col("ord").cast(pl.Int64), vmi.alias("vmi"))


def _in_canonical_order(events: pl.DataFrame) -> bool:
    """True when rows are already sorted by (ts, seq), as Trace promises (checking is cheaper than sorting)."""
    dts, dseq = pl.col("ts").diff(), pl.col("seq").diff()
    return bool(events.select(((dts > 0) | ((dts == 0) & (dseq > 0))).fill_null(True).all()).item())
