"""Guest clock -> host clock: decide the offset and say whether the sides line up.

host_ts = guest_ts + offset. Where the offset comes from, in order: the user's
guest offset option; nothing (0) when host and guest already share a timeline
(a merged trace-cmd report after tsync, or a single side); or the
`kvm_write_tsc_offset` host event (guest_tsc = host_tsc + tsc_offset, which only
applies when both sides used the TSC as trace clock, so it is applied only when
it turns disjoint timelines into overlapping ones). Whatever the source, the
result is checked: disjoint host and guest time ranges are reported as not
synchronized, never silently analyzed together.
"""

from __future__ import annotations

from typing import Any

import polars as pl


def _span(ts: pl.Series) -> tuple[int, int] | None:
    if ts.len() == 0 or ts.null_count() == ts.len():
        return None
    return int(ts.min()), int(ts.max())  # type: ignore[arg-type]


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return min(a[1], b[1]) - max(a[0], b[0])


def guest_offset(
    host_ts: pl.Series,
    guest_ts: pl.Series,
    *,
    guest_offset_ns: int | None,
    tsc_offsets: pl.Series | None,
) -> tuple[int, dict[str, Any]]:
    """The offset to add to guest timestamps, and a clock report for the ingest info.

    host_ts / guest_ts: the timestamps of each side's events (guest ones still
    on the guest clock). tsc_offsets: the signed offsets of the trace's
    kvm_write_tsc_offset events (None or empty when absent).
    """
    host, guest = _span(host_ts), _span(guest_ts)
    report: dict[str, Any] = {"guest_offset_ns": 0}
    if guest is None:
        report["mode"] = "host only: one clock"
        return 0, report
    if guest_offset_ns is not None:
        offset, report["mode"] = int(guest_offset_ns), "guest offset given by the user"
    elif host is None:
        report["mode"] = "guest only: one clock"
        return 0, report
    else:
        offset, report["mode"] = 0, "host and guest taken as one timeline (merged input)"
        distinct = (
            tsc_offsets.drop_nulls().unique() if tsc_offsets is not None else pl.Series([], dtype=pl.Int64)
        )
        if distinct.len():
            candidate = -int(distinct.sort()[distinct.len() // 2])
            shifted = (guest[0] + candidate, guest[1] + candidate)
            if _overlap(host, guest) < 0 <= _overlap(host, shifted):
                offset, report["mode"] = candidate, "kvm_write_tsc_offset (both sides on the TSC clock)"
            else:
                report["tsc_offset_ignored"] = (
                    "kvm_write_tsc_offset present but not applied: it does not align the two time ranges "
                    "(the traces are probably not both on the TSC clock)"
                )
            if distinct.len() > 1:
                report["tsc_offsets_seen"] = distinct.len()
    report["guest_offset_ns"] = offset
    if host is not None:
        shifted = (guest[0] + offset, guest[1] + offset)
        report["host_span"] = list(host)
        report["guest_span"] = list(shifted)
        report["synchronized"] = _overlap(host, shifted) >= 0
        if not report["synchronized"]:
            report["warning"] = (
                f"host and guest are not synchronized: host events span [{host[0]}, {host[1]}] ns but "
                f"guest events [{shifted[0]}, {shifted[1]}] ns; record with trace-cmd -A (tsync) or pass "
                "--guest-offset-ns (host = guest + offset)"
            )
    return offset, report
