"""Lost-event windows: where the tracer dropped events, and whom that blinds.

A `lost_events` marker says events were lost on one CPU just before it; the
window runs from the previous event seen on that CPU to the marker. Time in a
window is never idle time: the vCPUs it touches are `unknown` there, and lock
intervals overlapping a guest window are excluded (docs/metrics.md, Trace edges).
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import lookup
from pvtrace.analyze.prepare import Prepared

I64, I32, STR = pl.Int64(), pl.Int32(), pl.String()

WINDOW_SCHEMA = {
    "origin": STR,
    "cpu": I32,
    "vm": STR,
    "start": I64,
    "end": I64,
    "n_lost": I64,
    "start_ord": I64,
    "ord": I64,
}


def lost_windows(prep: Prepared) -> pl.DataFrame:
    """One row per lost-events marker: origin, cpu, vm (guest), start, end, n_lost, ords."""
    lost = prep.lost
    if lost.height == 0:
        return pl.DataFrame(schema=WINDOW_SCHEMA)
    t0 = prep.window.t_start
    guest = pl.col("origin") == "guest"
    markers = lost.select(
        pl.when(guest).then(pl.lit("guest")).otherwise(pl.lit("host")).alias("origin"),
        pl.when(guest).then(pl.coalesce("vcpu", "pcpu")).otherwise(pl.col("pcpu")).cast(I32).alias("cpu"),
        pl.when(guest).then(pl.col("vm")).otherwise(None).alias("vm"),
        "ts",
        "ord",
        pl.col("value").alias("n_lost"),
    )
    ev = prep.cpu_events.filter(pl.col("kind") != "lost_events")
    # Host side: the previous event on the same pCPU.
    host_ev = (
        ev.filter((pl.col("origin") != "guest") & pl.col("pcpu").is_not_null())
        .select(
            pl.col("pcpu").cast(I64).alias("key"),
            pl.col("ord").alias("prev_ord"),
            pl.col("ts").alias("prev_ts"),
        )
        .collect()
    )  # in canonical order, as lookup() takes it
    host = markers.filter(pl.col("origin") == "host").with_columns(pl.col("cpu").cast(I64).alias("key"))
    host = lookup(
        host,
        host_ev,
        by="key",
        on="ord",
        table_on="prev_ord",
        values=["prev_ord", "prev_ts"],
        strict=True,
    )
    # Guest side: the previous event of the same guest CPU.
    guest_keys = prep.vcpus.select(pl.col("vm"), pl.col("vcpu").cast(I32), pl.col("vid").alias("key"))
    guest_ev = (
        ev.filter(pl.col("origin") == "guest")
        .select("vm", pl.coalesce("vcpu", "pcpu").cast(I32).alias("vcpu"), "ord", "ts")
        .collect()
        .join(guest_keys, on=["vm", "vcpu"], how="inner")
        .select("key", pl.col("ord").alias("prev_ord"), pl.col("ts").alias("prev_ts"))
        .sort("prev_ord")
    )
    guest_m = markers.filter(pl.col("origin") == "guest").join(
        guest_keys, left_on=["vm", "cpu"], right_on=["vm", "vcpu"], how="left", maintain_order="left"
    )
    guest_m = lookup(
        guest_m,
        guest_ev,
        by="key",
        on="ord",
        table_on="prev_ord",
        values=["prev_ord", "prev_ts"],
        strict=True,
    )
    both = pl.concat([host.drop("key", "_row"), guest_m.drop("key", "_row")], how="diagonal_relaxed")
    return both.select(
        "origin",
        "cpu",
        "vm",
        pl.col("prev_ts").fill_null(t0).alias("start"),
        pl.col("ts").alias("end"),
        "n_lost",
        pl.col("prev_ord").fill_null(-1).alias("start_ord"),
        "ord",
    ).sort("start", "ord")


def vcpu_unknown_windows(windows: pl.DataFrame, changes: pl.DataFrame, prep: Prepared) -> pl.DataFrame:
    """(vid, start, end): stretches where a lost window makes a vCPU's state unknown.

    Host window on pCPU p: the vCPU running on p at the window start, any vCPU whose
    first state change after the marker leaves p, and any vCPU not running at the
    window start that can run on p (it ran there, or on several pCPUs: it may have run
    there, unseen) are unknown from the window start until their first state change
    after the marker. Guest window on CPU c:
    vCPU c of that VM is unknown inside the window.
    """
    out_schema = {"vid": I64, "start": I64, "end": I64}
    parts = [pl.DataFrame(schema=out_schema)]
    host = windows.filter(pl.col("origin") == "host")
    if host.height and prep.n_vcpus:
        # Who occupies each pCPU after each state change.
        occ = (
            changes.select(
                pl.col("pcpu").cast(I64).alias("key"),
                "ord",
                pl.when(pl.col("state") == "running").then(pl.col("vid")).otherwise(None).alias("occupant"),
            )
            .filter(pl.col("key").is_not_null())
            .sort("key", "ord")
        )
        host = lookup(
            host.with_columns(pl.col("cpu").cast(I64).alias("key")),
            occ,
            by="key",
            on="start_ord",
            table_on="ord",
            values=["occupant"],
        ).drop("_row")
        cross = host.join(prep.vcpus.select("vid"), how="cross")
        nxt = lookup(
            cross,
            changes.select(
                pl.col("vid").alias("key"),
                pl.col("ord").alias("next_ord"),
                pl.col("ts").alias("next_ts"),
                pl.col("kind").alias("next_kind"),
                pl.col("pcpu").alias("next_pcpu"),
            ),
            by="vid",
            on="ord",
            table_on="next_ord",
            values=["next_ts", "next_kind", "next_pcpu"],
            direction="forward",
            strict=True,
        )
        # The state of each vCPU at the window start, and the pCPUs each vCPU ever ran on.
        nxt = lookup(
            nxt,
            changes.select(pl.col("vid").alias("key"), pl.col("ord").alias("c_ord"), "state"),
            by="vid",
            on="start_ord",
            table_on="c_ord",
            values=["state"],
        ).drop("_row")
        ran = (
            changes.filter((pl.col("state") == "running") & pl.col("pcpu").is_not_null())
            .select("vid", pl.col("pcpu").cast(I32).alias("cpu"))
            .unique()
        )
        # able to run on p: seen there, or seen on several pCPUs (not pinned: its runs on p may
        # all be in the lost windows); a vCPU seen on one other pCPU only is taken as pinned there
        ran_on = ran.with_columns(pl.lit(True).alias("ran_there"))
        roams = ran.group_by("vid").agg((pl.len() > 1).alias("roams"))
        nxt = nxt.join(ran_on, on=["vid", "cpu"], how="left").join(roams, on="vid", how="left")
        affected = nxt.filter(
            (pl.col("vid") == pl.col("occupant"))
            | (
                pl.col("next_kind").is_in(["vcpu_preempt", "vcpu_halt"])
                & (pl.col("next_pcpu") == pl.col("cpu"))
            )
            # not running elsewhere at the start and able to run on p: it may have run in the window
            | (
                (pl.col("state").is_null() | (pl.col("state") != "running"))
                & (pl.col("ran_there").fill_null(False) | pl.col("roams").fill_null(False))
            )
        )
        parts.append(
            affected.select("vid", "start", pl.col("next_ts").fill_null(prep.window.t_end).alias("end"))
        )
        parts.append(_stopped_inside(host, changes, ran, roams, prep.window.t_end))
    guest = windows.filter(pl.col("origin") == "guest")
    if guest.height:
        parts.append(
            guest.join(
                prep.vcpus.select("vm", pl.col("vcpu").cast(I32).alias("cpu"), "vid"),
                on=["vm", "cpu"],
                how="inner",
            ).select("vid", "start", "end")
        )
    return pl.concat(parts).filter(pl.col("end") > pl.col("start")).sort("vid", "start")


def _stopped_inside(
    host: pl.DataFrame, changes: pl.DataFrame, ran: pl.DataFrame, roams: pl.DataFrame, t_end: int
) -> pl.DataFrame:
    """(vid, start, end): a vCPU that stops running inside a host window (a preemption or halt seen
    on another pCPU) and can run on the blinded pCPU may have run there unseen until its next state
    change: unknown from the stop to that change."""
    cpus = host.select(pl.col("cpu").cast(I32)).unique()
    able = pl.concat(
        [ran, roams.filter(pl.col("roams")).select("vid").join(cpus, how="cross")], how="vertical_relaxed"
    ).unique()
    stops = changes.select(
        "vid", "ord", "ts", "state", pl.col("ts").shift(-1).over("vid").alias("next_ts")
    ).filter(pl.col("state") != "running")
    inside = stops.join_where(
        host.select(
            pl.col("cpu").cast(I32).alias("w_cpu"), pl.col("start_ord").alias("w0"), pl.col("ord").alias("w1")
        ),
        pl.col("ord") > pl.col("w0"),
        pl.col("ord") < pl.col("w1"),
    ).join(able, left_on=["vid", "w_cpu"], right_on=["vid", "cpu"], how="semi")
    return inside.select("vid", pl.col("ts").alias("start"), pl.col("next_ts").fill_null(t_end).alias("end"))
