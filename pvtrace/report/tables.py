"""The tables of a trace page: incidents (sortable, linked to the timeline), callers per lock,
perf summary tables, and the one box that says what the trace cannot tell."""

from __future__ import annotations

import html

import polars as pl

from pvtrace.analyze.context import incidents, lock_table
from pvtrace.analyze.perf_tables import IMPLICATION_GROUPS, kvm_stat_implications
from pvtrace.analyze.result import Analysis
from pvtrace.fmt import (
    LIKELY_HOLDER_NOTE,
    fmt_lock,
    fmt_ns,
    fmt_trace_time,
    fmt_wait,
    fmt_waste,
    guest_clocks,
    incident_role,
    plural,
    several_vms,
)
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.labels import METRIC_LABELS

MAX_INCIDENT_ROWS = 200
MAX_LOCK_ROWS = 30
NUM = ' class="num"'


def _sortable(
    columns: list[tuple[str, bool]], rows: list[tuple[dict[str, str], list[tuple[str, str]]]], cls: str
) -> str:
    """A sortable HTML table: columns (title, numeric), rows (tr attributes, cells (text, sort key))."""
    head = "".join(f'<th data-num="{1 if num else 0}">{html.escape(title)}</th>' for title, num in columns)
    body = []
    for attrs, cells in rows:
        tr = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        tds = "".join(
            f'<td{NUM if num else ""} data-v="{html.escape(key)}">{html.escape(text)}</td>'
            for (text, key), (_, num) in zip(cells, columns, strict=True)
        )
        body.append(f"<tr{tr}>{tds}</tr>")
    return (
        f'<table class="sortable {cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def incident_table_figure(analysis: Analysis, t0: int, span: tuple[int, int]) -> Figure:
    """Every incident (the worst MAX_INCIDENT_ROWS by waste) with its trace timestamp; a row inside
    the timeline's data (span) moves the timeline to it."""
    name, title = "incident-table", "Incident list"
    inc = analysis.table("incidents")
    if inc.height == 0:  # an analysis built without the context step: the incidents without pCPUs
        inc = incidents(analysis.table("lhp_incidents"), analysis.table("lwp_incidents"), None)
    if inc.height == 0:
        if "n_lhp" not in analysis.summary.totals and "n_lhp_harmful" not in analysis.summary.totals:
            fig = no_data(name, title, "LHP and LWP incidents need host vCPU states")
            fig.limit = True
            return fig
        return no_data(name, title, "no LHP or LWP incidents in this trace")
    shown = inc.head(MAX_INCIDENT_ROWS)
    several = several_vms(analysis.table("vcpu_states"), analysis.table("waits"), inc)
    columns = [
        ("kind", False),
        ("start (trace time, s)", True),
        ("vCPU", False),
        ("lock", False),
        ("state", False),
        ("ran instead", False),
        ("duration", True),
        ("waiters", True),
        ("waste", True),
    ]
    rows = []
    lo, hi = span
    clocks = guest_clocks(analysis.summary.extra)
    for r in shown.iter_rows(named=True):
        vcpu = f"{r['vm']}/{r['vcpu']}" if several else str(r["vcpu"])
        who = incident_role(r["kind"], r["guessed"])
        attrs = {}
        if r["end"] > lo and r["start"] < hi:
            attrs = {
                "data-start-ms": f"{(r['start'] - t0) / 1e6:.6f}",
                "data-end-ms": f"{(r['end'] - t0) / 1e6:.6f}",
            }
        instead = "-" if r["ran_instead"] is None else f"pCPU {r['pcpu']}: {r['ran_instead']}"
        rows.append(
            (
                attrs,
                [
                    (r["kind"], r["kind"]),
                    (fmt_trace_time(r["start"], r["vm"], clocks), str(r["start"])),
                    (f"{vcpu} ({who})", vcpu),
                    (fmt_lock(r["lock"]), fmt_lock(r["lock"])),
                    (r["state"] + (" (cut by trace end)" if r["truncated"] else ""), r["state"]),
                    (instead, instead),
                    (fmt_ns(r["dur"]), str(r["dur"])),
                    (f"{r['n_waiters']:,}", str(r["n_waiters"])),
                    (fmt_ns(r["waste_ns"]), str(r["waste_ns"] if r["waste_ns"] is not None else -1)),
                ],
            )
        )
    caption = (
        f"{plural(inc.height, 'incident')}"
        + (f", the {shown.height} that wasted most shown" if inc.height > shown.height else "")
        + ". Times are trace timestamps as the trace prints them (search the raw trace for them). "
        "Click a header to sort; click a row to move the timeline there. `ran instead`: what used the "
        "pCPU the vCPU was preempted from." + (f" {LIKELY_HOLDER_NOTE}." if shown["guessed"].any() else "")
    )
    note = ""
    if any(not a for a, _ in rows):
        note = "Rows without a link lie outside the stretch the timeline carries: rerun with --window."
    table = _sortable(columns, rows, "pvtrace-incidents")
    return Figure(name, title, caption=caption, note=note, html=f'<div class="scroll">{table}</div>')


def locks_figure(analysis: Analysis) -> Figure:
    """Locks by total wait, as the terminal shows them, with their top callers."""
    name, title = "locks", "Locks by total wait, with callers"
    locks = lock_table(
        analysis.table("waste_by_lock"), analysis.table("waits"), analysis.table("lock_callers")
    )
    if locks.height == 0:
        return no_data(name, title, "no contended lock waits in this trace")
    shown = locks.head(MAX_LOCK_ROWS)
    has_waste = shown["waste_ns"].is_not_null().any()
    lwp_known = "waste_lwp_ns" in analysis.summary.totals
    columns = [
        ("VM", False),
        ("lock", False),
        ("contended", True),
        ("total wait", True),
        *([("waste", True)] if has_waste else []),
        ("max wait", True),
        ("p50 wait", True),
        ("top callers (waits)", False),
    ]
    rows = []
    tick = analysis.clock_tick()
    for r in shown.iter_rows(named=True):
        cells = [
            (r["vm"], r["vm"]),
            (fmt_lock(r["lock"]), fmt_lock(r["lock"])),
            (f"{r['n_contended']:,}", str(r["n_contended"])),
            (fmt_wait(r["total_wait_ns"], tick), str(r["total_wait_ns"])),
            *(
                [
                    (
                        fmt_waste(r["waste_ns"], lwp_known and r["waste_lhp_only"]),
                        str(r["waste_ns"] if r["waste_ns"] is not None else -1),
                    )
                ]
                if has_waste
                else []
            ),
            (fmt_wait(r["max_wait_ns"], tick), str(r["max_wait_ns"])),
            (fmt_wait(r["p50_wait_ns"], tick), str(r["p50_wait_ns"])),
            (r["top_callers"] or "-", r["top_callers"] or ""),
        ]
        rows.append(({}, cells))
    callers = analysis.table("lock_callers").height > 0
    caption = (
        f"{plural(locks.height, 'lock')} with contended waits, sorted by total wait as perf lock contention "
        "sorts them. "
        + (
            "Callers: the first stack frame outside the lock code, from the stack `pvtrace record` takes per wait."
            if callers
            else "No callers: the trace has no stacks (record the guest with `sudo pvtrace record --guest`, "
            "which takes a stack per SPIN wait)."
        )
    )
    return Figure(name, title, caption=caption, html=_sortable(columns, rows, "pvtrace-locks"))


def perf_figures(analysis: Analysis) -> list[Figure]:
    """The perf kvm stat and perf lock contention tables of the inputs, as perf prints them."""
    figs = []
    kvm = analysis.tables.get("perf_kvm_stat")
    if kvm is not None and kvm.height:
        for (inp, block), df in kvm.group_by(["input", "block"], maintain_order=True):
            first = df.row(0, named=True)
            table = df.sort("n_samples", descending=True).select(
                pl.col("key").alias(first["key_kind"]),
                pl.col("n_samples").alias("samples"),
                pl.col("samples_pct").alias("samples %"),
                pl.col("time_pct").alias("time %"),
                pl.col("min_ns").map_elements(fmt_ns, return_dtype=pl.String).alias("min"),
                pl.col("avg_ns").map_elements(fmt_ns, return_dtype=pl.String).alias("mean"),
                pl.col("max_ns").map_elements(fmt_ns, return_dtype=pl.String).alias("max"),
            )
            scope = f", {first['scope']}" if first["scope"] else ""
            figs.append(
                Figure(
                    f"perf-kvm-stat-{len(figs)}",
                    f"perf kvm stat, table {block}{scope}",
                    table=table,
                    caption=f"From {inp}.",
                )
            )
        imp = kvm_stat_implications(kvm)
        if imp.height:
            table = imp.select(
                pl.col("block").alias("table"),
                pl.col("group")
                .replace_strict({g: v[1] for g, v in IMPLICATION_GROUPS.items()})
                .alias("exits"),
                pl.col("samples_pct").alias("exits %"),
                pl.col("time_pct").alias("time %"),
            )
            figs.append(
                Figure(
                    "perf-kvm-stat-implications",
                    "What the exits imply for lock waiting",
                    table=table,
                    caption="What each group means: PAUSE exits come from pause-loop exiting (a vCPU spun "
                    "long, e.g. a lock waiter whose holder is not running; arm64's WFE traps are the same); HLT/WFx "
                    "from idle or pv-halted vCPUs (arm64's WFx class also holds WFE traps: spinning); hypercalls (RISC-V: SBI calls, SUPERVISOR_SYSCALL) include pv kicks and yields. "
                    "A RISC-V table cannot show the first two (no pause-loop exiting; WFI exits are among "
                    "VIRTUAL_INST_FAULT): those cells are empty, not 0.",
                )
            )
    locks = analysis.tables.get("perf_lock_contention")
    if locks is not None and locks.height:
        for (inp, block), df in locks.group_by(["input", "block"], maintain_order=True):
            keys = [
                k for k in ("type", "caller", "pid", "comm", "address", "symbol") if df[k].is_not_null().any()
            ]
            table = df.sort("total_wait_ns", descending=True).select(
                pl.col("n_contended").alias("contended"),
                *[
                    pl.col(c).map_elements(fmt_ns, return_dtype=pl.String).alias(label)
                    for c, label in (
                        ("total_wait_ns", "total wait"),
                        ("max_wait_ns", "max wait"),
                        ("avg_wait_ns", "avg wait"),
                    )
                ],
                *[
                    (
                        pl.col(k).map_elements(fmt_lock, return_dtype=pl.String)
                        if k == "address"
                        else pl.col(k)
                    ).alias(k)
                    for k in keys
                ],
            )
            figs.append(
                Figure(
                    f"perf-lock-contention-{len(figs)}",
                    f"perf lock contention, table {block}, by total wait",
                    table=table,
                    caption=f"From {inp}.",
                )
            )
    return figs


def limits_figure(analysis: Analysis, left_out: list[Figure]) -> Figure:
    """One box: the metrics and figures this trace cannot give, and the command(s) that would."""
    s = analysis.summary
    partial = s.extra.get("partial") or {}
    if not s.unavailable and not left_out and not partial:
        return no_data("limits", "What this trace cannot tell", "nothing: every metric is available")
    how: dict[str, list[str]] = {}
    for u in s.unavailable:
        label = METRIC_LABELS.get(u.metric, u.metric)
        if u.metric == "n_lhp" and "n_lhp_harmful" in s.totals:  # the harmful ones are given
            label = "harmless LHP incidents (no waiter)"
        how.setdefault(u.how_to_capture or "-", []).append(label)
    items = [
        f"<li><b>{html.escape('; '.join(metrics))}</b>: {html.escape(cmd)}</li>"
        for cmd, metrics in how.items()
    ]
    # a total given in part: what it lacks and the fix (the page gave the reason, the fix was in the JSON)
    parts: dict[tuple[str, str], list[str]] = {}
    for key, reasons in partial.items():
        for r in reasons:
            label = "spin waste (LHP + LWP)" if key == "spin_waste" else METRIC_LABELS.get(key, key)
            parts.setdefault((r["missing"], r.get("fix") or ""), []).append(label)
    given = [
        f"<li><b>{html.escape('; '.join(metrics))}</b>: {html.escape(missing)}"
        + (f"; fix: {html.escape(fix)}" if fix else "")
        + "</li>"
        for (missing, fix), metrics in parts.items()
    ]
    charts = ", ".join(f.title for f in left_out)
    body = (
        '<div class="limits">'
        + (f"<p>Not drawn, as this trace cannot give them: {html.escape(charts)}.</p>" if charts else "")
        + (
            "<p>Metrics not in this trace, and what would give them:</p><ul>" + "".join(items) + "</ul>"
            if items
            else ""
        )
        + (
            "<p>Metrics given in part, what they lack and how to complete them:</p><ul>"
            + "".join(given)
            + "</ul>"
            if given
            else ""
        )
        + "<p>Nothing here is counted as zero.</p></div>"
    )
    return Figure("limits", "What this trace cannot tell", html=body)
