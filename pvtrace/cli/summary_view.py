"""The terminal summary of `pvtrace analyze`, laid out for a perf user to read in 30 seconds.

Order: one line on the trace; the headline numbers the trace can give (a metric it
cannot give gets no row); exit reasons (host traces); the locks by total wait with
waste, max wait and callers; the worst incidents with absolute trace timestamps and
what ran in the preempted vCPU's place; convoys; perf summary tables; and one
closing line saying what the trace cannot tell and the `pvtrace record` command
that would.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pvtrace.analyze import Analysis
from pvtrace.analyze.context import lock_table
from pvtrace.analyze.count_gaps import lost_events_text, tracer_lost
from pvtrace.analyze.guest_summary import partial_groups, preemption_line
from pvtrace.analyze.lock_kind import FROM_VM
from pvtrace.analyze.perf_tables import IMPLICATION_GROUPS, kvm_stat_implications
from pvtrace.cli.fit import print_fitted
from pvtrace.fmt import (
    LIKELY_HOLDER_NOTE,
    fmt_2dp,
    fmt_lock,
    fmt_ns,
    fmt_trace_time,
    fmt_ts,
    fmt_wait,
    fmt_waste,
    guest_clocks,
    incident_role,
    plural,
    several_vms,
)

TOP_LOCKS = 10
TOP_INCIDENTS = 8

# What the closing line calls each unavailable metric, in headline order.
_MISSING_LABELS: dict[str, str] = {
    "spin_ns": "spin time",
    "waste_lhp_ns": "LHP waste",
    "waste_lwp_ns": "LWP waste",
    "wait_halted_ns": "wait while halted/preempted",
    "n_acquisitions": "uncontended acquisitions (lockdep kernels only)",
    "n_contended": "lock waits",
    "n_lhp": "harmless LHP incidents (no waiter)",
    "n_lwp": "LWP incidents",
    "n_convoys": "convoys",
    "n_pause_exits": "pause exits",
    "n_kicks": "pv kicks",
}


def _table(title: str, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    """A table whose title _print writes as its own line (a rich title is padded with blanks to the
    table's width, which piped output keeps)."""
    t = Table(header_style="bold")
    t.pv_title = title  # type: ignore[attr-defined]
    for c in columns:
        t.add_column(c, justify="left" if c in left else "right", no_wrap=True)
    return t


def render_summary(con: Console, a: Analysis, sources: list[str]) -> None:
    """Print the whole summary of one analysis."""
    x = a.summary.extra
    perf = [n for n in ("perf_kvm_stat", "perf_lock_contention") if n in a.tables]
    con.print(_header(a, sources), highlight=False, soft_wrap=True)
    if x.get("filters"):  # under the header, before any number it narrows (it came last, after them)
        con.print(f"filtered: {escape(x['filters'])}", highlight=False, soft_wrap=True)
    if line := estimated_clocks_line(x.get("clock") or {}):  # every joined number rests on it
        con.print(line, highlight=False, soft_wrap=True)
    if g := x.get("guest_preemption"):  # the guest-inferred level: what the guest's ticks and steal showed
        con.print(preemption_line(g), highlight=False, soft_wrap=True)
        parts = [p for ps in (x.get("partial") or {}).values() for p in ps]
        for why, what in partial_groups(x).items():
            part = next((p for p in parts if p["missing"] == why), {"missing": why})
            con.print(f"partial ({what}): {escape(partial_text(part))}", highlight=False, soft_wrap=True)
    if x.get("n_events", 0) or not perf:
        _headline(con, a)
        _exits(con, a)
        _locks(con, a)
        _incidents(con, a)
        _convoys(con, a)
    if "perf_kvm_stat" in a.tables:
        render_kvm_stat(con, a.tables["perf_kvm_stat"])
    if "perf_lock_contention" in a.tables:
        render_lock_contention(con, a.tables["perf_lock_contention"])
    line = limits_line(a)
    if line:
        con.print(line, highlight=False, soft_wrap=True)


def _header(a: Analysis, sources: list[str]) -> str:
    x = a.summary.extra
    names = escape(", ".join(sources))
    n = x.get("n_events", 0)
    if not n and any(k in a.tables for k in ("perf_kvm_stat", "perf_lock_contention")):
        rows = sum(a.tables[k].height for k in ("perf_kvm_stat", "perf_lock_contention") if k in a.tables)
        return f"[bold]pvtrace analyze[/] {names}: perf summary table, {plural(rows, 'row')}, no events"
    t0, t1 = x.get("t_start"), x.get("t_end")
    clock = x.get("clock") or {}
    host = next((g["host_span"] for g in (clock.get("guests") or {}).values() if "host_span" in g), None)
    if clock.get("synchronized") is False and host:  # one span over two clocks would mean nothing
        t0, t1 = host
    span = (
        f"{fmt_ts(t0)} to {fmt_ts(t1)} ({fmt_ns((t1 or 0) - (t0 or 0))})" if t0 is not None else "no events"
    )
    if clock.get("synchronized") is False and host:
        apart = sorted(vm for vm, g in (clock.get("guests") or {}).items() if g.get("synchronized") is False)
        on_own = (
            "guests on their own clocks"
            if x.get("level") == "unjoined" or not apart
            else f"{', '.join(apart)} on its own clock"
        )
        span = f"host {span}, {on_own}"
    if x.get("untimed_records") and t0 == t1:
        span = "no timestamps"
    # without vCPU states or lock waits nothing says the CPUs are virtual (a bare-metal trace)
    cpus = plural(x.get("n_vcpus", 0), "vCPU" if x.get("level") != "none" else "CPU")
    if x.get("level") == "none" and not x.get("n_vcpus"):  # '0 CPUs' read as a trace of no CPU
        cpus = "no vCPU"
    level = f"level [bold]{x.get('level')}[/]"
    if x.get("level") == "unjoined":  # analyze.fidelity.summary_level
        level += " (host and guest events not joined: each side's own metrics only)"
    return (
        f"[bold]pvtrace analyze[/] {names}: {level}, {span}, "
        f"{plural(n, 'event')}, {cpus}, {plural(x.get('n_locks', 0), 'lock')}"
    )


def estimated_clocks_line(clock: dict) -> str:
    """The guest clocks put on the host's by an estimate from the events, each with the farthest
    its line may place a guest event (span uncertainty) and any drift; '' when none was."""
    parts = []
    for vm, g in sorted((clock.get("guests") or {}).items()):
        est = g.get("estimate")
        if not est or not str(g.get("mode", "")).startswith("estimated"):
            continue
        offset = est["offset_ns"]
        drift = est.get("drift_ppm") or 0.0
        parts.append(
            f"{escape(vm)} host = guest {'-' if offset < 0 else '+'} {abs(offset) / 1e9:.9f} s "
            f"(+-{fmt_ns(est['span_uncertainty_ns'])})"
            + (f", drifting {drift:+.2f} +- {est['drift_uncertainty_ppm']:.2f} ppm" if drift else "")
        )
    if not parts:
        return ""
    return "guest clocks estimated from the events (no offsets given): " + "; ".join(parts)


def waste_label(s) -> str:
    """The spin waste headline, saying which part is missing when LWP is unavailable (a partial LWP
    part is flagged like every partial row: headline)."""
    if "waste_lwp_ns" not in s.totals:
        return "spin waste (LHP only: LWP needs the lock kind)"
    return "spin waste (LHP + LWP)"


def _print(con: Console, t: Table, *, drop: tuple[str, ...] = (), wrap: tuple[str, ...] = ()) -> None:
    """Print a table fitted to the console (cli.fit), saying which columns it left out."""
    if getattr(t, "pv_title", ""):
        con.print(f"[bold]{t.pv_title}[/]", highlight=False, soft_wrap=True)
    print_fitted(con, t, drop=tuple((d,) for d in drop), wrap=wrap, how="--width {full}")


def headline_rows(a: Analysis) -> list[tuple[str, str, str]]:
    """(label, value, fidelity level) of every headline metric this trace gives, in reading order."""
    return headline(a)[0]


def headline(a: Analysis) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The headline rows, and the notes under them: each reason a row is partial, numbered, with
    its fix (in the label it pushed the value and level columns off a terminal, and the fix,
    `--lock-kind` say, was in the JSON alone)."""
    s = a.summary
    t, x = s.totals, s.extra
    rows: list[tuple[str, str, str]] = []
    notes = _PartialNotes(x)
    flag = notes.flag

    def add(label: str, key: str, value: str | None = None) -> None:
        if key in t:
            value = value if value is not None else f"{t[key]:,}"
            rows.append((label + flag(key), value, s.fidelity.get(key, "")))

    add("spin (waiting while running)", "spin_ns", fmt_ns(t.get("spin_ns")))
    if "waste_lhp_ns" in t:
        waste = t["waste_lhp_ns"] + t.get("waste_lwp_ns", 0)
        pct = x.get("spin_waste_pct_of_running")
        label = waste_label(s) + (flag("spin_waste") if "waste_lwp_ns" in t else "")
        value = fmt_ns(waste) + (f" ({pct:.2f}% of running)" if pct is not None else "")
        rows.append((label, value, s.fidelity.get("waste_lhp_ns", "")))
    lhp = fmt_ns(t.get("waste_lhp_ns"))
    if between := (x.get("guest_preemption") or {}).get("lhp_waste_range_ns"):  # analyze/guest_lwp.py
        lhp = f"{fmt_ns(between[0])}-{fmt_ns(between[1])}" + (
            f" ({lhp})" if between[1] != t["waste_lhp_ns"] else ""
        )
    add("  LHP: holder not running", "waste_lhp_ns", lhp)
    add("  LWP: next owner preempted", "waste_lwp_preempted_ns", fmt_ns(t.get("waste_lwp_preempted_ns")))
    add("  LWP: next owner halted", "waste_lwp_halted_ns", fmt_ns(t.get("waste_lwp_halted_ns")))
    add("  useful spin", "spin_useful_ns", fmt_ns(t.get("spin_useful_ns")))
    add("  unattributed spin", "spin_unattributed_ns", fmt_ns(t.get("spin_unattributed_ns")))
    add("wait while halted (pv slow path)", "wait_halted_ns", fmt_ns(t.get("wait_halted_ns")))
    add("wait while preempted", "wait_preempted_ns", fmt_ns(t.get("wait_preempted_ns")))
    add("acquisitions", "n_acquisitions")
    if "n_contended" in t:
        wait = x.get("wait_ns")
        value = f"{t['n_contended']:,}" + (f", {fmt_ns(wait)} total wait" if wait else "")
        # the count's own parts, and the total wait's (stack capture time in every wait)
        label = "contended (lock waits)" + flag("n_contended", *(["wait_ns"] if wait else []))
        rows.append((label, value, s.fidelity.get("n_contended", "")))
    add("LHP incidents (harmful)", "n_lhp", f"{t.get('n_lhp', 0):,} ({t.get('n_lhp_harmful', 0):,})")
    if "n_lhp" not in t:  # without every acquisition only the harmful ones (a waiter spun) are seen
        guessed = x.get("n_lhp_harmful_guessed")
        add(
            "harmful LHP incidents",
            "n_lhp_harmful",
            f"{t.get('n_lhp_harmful', 0):,}" + (f" ({guessed:,} with a likely holder)" if guessed else ""),
        )
    if "n_lwp" in t:
        value = f"{t['n_lwp']:,} ({t.get('n_lwp_preempted', 0):,} / {t.get('n_lwp_halted', 0):,})"
        rows.append(
            (
                "LWP incidents (preempted / halted)" + flag("n_lwp"),
                value,
                s.fidelity.get("n_lwp", ""),
            )
        )
    add("convoys (longest)", "n_convoys", f"{t.get('n_convoys', 0):,} ({t.get('convoy_len_max', 0)})")
    if "n_pause_exits" in t:
        rate = x.get("pause_exits_per_vcpu_s")
        value = f"{t['n_pause_exits']:,}" + (f" ({rate:,.1f} per second of vCPU running)" if rate else "")
        rows.append(("pause exits" + flag("n_pause_exits"), value, s.fidelity.get("n_pause_exits", "")))
    if "n_kicks" in t:
        p50 = x.get("kick_latency_p50_ns")
        value = f"{t['n_kicks']:,}" + (f" (latency p50 {fmt_ns(p50)})" if p50 is not None else "")
        rows.append(("pv kicks" + flag("n_kicks"), value, s.fidelity.get("n_kicks", "")))
    add("waits, holds and incidents cut by the trace end", "n_truncated")  # a bare "cut by ..." named nothing
    return rows, notes.lines()


class _PartialNotes:
    """The reasons headline totals leave part out (analyze.partial), numbered in reading order."""

    def __init__(self, x: dict) -> None:
        self.partial = x.get("partial") or {}
        # the guest's ticks: printed above the table with their fix, referred to, not repeated
        self.above = set((x.get("guest_preemption") or {}).get("partial_reasons") or [])
        self.parts: dict[str, dict] = {}  # missing -> the first part that says it

    def flag(self, *keys: str) -> str:
        """' (partial [1])' for a total that leaves part out ('see above' for a reason printed there);
        several keys (a row that shows two totals) get one flag with every reason of either."""
        parts = [p for key in keys for p in self.partial.get(key) or []]
        refs = []
        for p in parts:
            if p["missing"] not in self.above:
                self.parts.setdefault(p["missing"], p)
                refs.append(f"[{list(self.parts).index(p['missing']) + 1}]")
        above = "see above" if len(refs) < len(parts) else ""
        if not refs:
            return f" (partial: {above})" if above else ""
        return f" (partial {' '.join(refs)}{'; ' + above if above else ''})"

    def lines(self) -> list[str]:
        """'[n] partial: what it lacks; how much spin is on it; fix: ...' per reason (unescaped)."""
        return [f"[{i}] partial: {partial_text(p)}" for i, p in enumerate(self.parts.values(), 1)]


def partial_text(p: dict) -> str:
    """A partial reason with the spin it holds and its fix, as one sentence."""
    text = p["missing"]
    if p.get("spin_pct_on_them") is not None:
        text += f" (on them: {fmt_ns(p['spin_ns_on_them'])} of spin, {p['spin_pct_on_them']:g}%)"
    return text + (f"; fix: {p['fix']}" if p.get("fix") else "")


def _headline(con: Console, a: Analysis) -> None:
    rows, notes = headline(a)
    if not rows:
        return
    t = _table("Headline", ["metric", "value", "level"], left=("metric", "level"))
    for row in rows:
        t.add_row(*(escape(c) for c in row))
    _print(con, t, wrap=("metric",))
    for note in notes:
        con.print(escape(note), highlight=False, soft_wrap=True)
    x = a.summary.extra
    if x.get("n_lost_windows"):
        label = "lost events" if tracer_lost(x) else "broken timestamps"
        con.print(f"{label}: {lost_events_text(x)}", highlight=False, soft_wrap=True)
    if x.get("n_events_overwritten"):
        con.print(
            f"ring buffer overwritten: {x['n_events_overwritten']:,} older events lost before the first record",
            highlight=False,
            soft_wrap=True,
        )


def _exits(con: Console, a: Analysis) -> None:
    ex = a.table("exit_reasons")
    if ex.height == 0:
        return
    tick = a.clock_tick()
    t = _table("VM exits by reason", ["reason", "exits", "exits %", "total time", "mean", "max"], ("reason",))
    for r in ex.sort("count", descending=True).iter_rows(named=True):
        timed = r["avg_ns"] is not None  # an exit with no entry after it has no duration
        t.add_row(
            escape(str(r["reason"])),
            f"{r['count']:,}",
            f"{r['share_pct']:.2f}",
            fmt_wait(r["total_ns"], tick) if timed else "-",
            fmt_wait(r["avg_ns"], tick),
            fmt_wait(r["max_ns"], tick),
        )
    _print(con, t, drop=("max", "mean"))
    if ex["avg_ns"].is_null().any():  # a row of bare '-' read as a number lost
        con.print(
            "-: no VM entry directly follows these exits in the trace, so they have no length",
            highlight=False,
        )


def waits_unmeasured(a: Analysis) -> bool:
    """Contentions were seen but no wait ever ended (contention_begin only): no wait has a length."""
    return bool(a.summary.totals.get("n_contended")) and not a.summary.extra.get("wait_ns")


def _locks(con: Console, a: Analysis) -> None:
    locks = lock_table(a.table("waste_by_lock"), a.table("waits"), a.table("lock_callers"))
    if locks.height == 0:
        return
    if waits_unmeasured(a):  # a table of 0 waits and 0 ns would read as no contention
        con.print(
            f"Locks: {plural(locks.height, 'lock')} contended; waits per lock and their lengths are "
            "unavailable (no wait ends in this trace)",
            highlight=False,
            soft_wrap=True,
        )
        return
    tick = a.clock_tick()
    several = several_vms(a.table("vcpu_states"), a.table("waits"))
    waste_known = locks["waste_ns"].is_not_null().any()
    lwp_known = "waste_lwp_ns" in a.summary.totals
    waste_col = "waste" if lwp_known else "waste (LHP)"
    callers = a.table("lock_callers").height > 0
    cols = [
        *(["vm"] if several else []),
        "lock",
        "contended",
        "total wait",
        *([waste_col] if waste_known else []),
        "max wait",
        "p50 wait",
        *(["top callers (waits)"] if callers else []),
    ]
    shown = locks.head(TOP_LOCKS)
    title = f"Locks by total wait (top {shown.height} of {locks.height})"
    t = _table(title, cols, left=("vm", "lock", "top callers (waits)"))
    for r in shown.iter_rows(named=True):
        t.add_row(
            *([escape(r["vm"])] if several else []),
            fmt_lock(r["lock"]),
            f"{r['n_contended']:,}",
            fmt_wait(r["total_wait_ns"], tick),
            *([fmt_waste(r["waste_ns"], lwp_known and r["waste_lhp_only"])] if waste_known else []),
            fmt_wait(r["max_wait_ns"], tick),
            fmt_wait(r["p50_wait_ns"], tick),
            *([escape(r["top_callers"] or "-")] if callers else []),
        )
    _print(con, t, drop=("p50 wait", "max wait"), wrap=("top callers (waits)",))
    # (only where waste is measured: LWP, convoys and unseen holders rest on the kinds)
    if "waste_lhp_ns" in a.summary.totals and (line := kinds_line(a.table("lock_kinds"))):
        con.print(line, highlight=False, soft_wrap=True)


def kinds_line(kinds: pl.DataFrame) -> str:
    """Where the contended locks' kinds came from: LWP, convoys and which spin is an unseen holder's
    rest on them, and a kind taken from the VM's other locks is an inference a user may want to
    override."""
    if kinds.height == 0:
        return ""

    def count(k: str, n: int) -> str:
        # the VM-decided share next to the kind it gave, not after the list (where it read as
        # part of the last kind: "2 undecided (1 decided ...)")
        m = ((kinds["kind"] == k) & (kinds["source"] == FROM_VM)).sum()
        return f"{n} {k}" + (
            f" ({m} of them by their VM's locks together: too little evidence of their own)" if m else ""
        )

    counts = ", ".join(
        count(k, n) for k in ("fifo", "unfair", "undecided") if (n := (kinds["kind"] == k).sum())
    )
    if (kinds["source"] == "--lock-kind").all():
        return f"lock kinds: {counts}, given by --lock-kind"
    if (kinds["source"] == "trace metadata").all():
        return f"lock kinds: {counts}, from the trace's metadata"
    return f"lock kinds from the trace: {counts}; --lock-kind overrides"


def _incidents(con: Console, a: Analysis) -> None:
    inc = a.table("incidents")
    if inc.height == 0:
        return
    shown = inc.head(TOP_INCIDENTS)
    several = several_vms(a.table("vcpu_states"), a.table("waits"), inc)
    cols = [
        "kind",
        "start (trace time)",
        "vCPU",
        "lock",
        "state",
        "ran instead",
        "duration",
        "waiters",
        "waste",
    ]
    title = f"Worst incidents by waste (top {shown.height} of {inc.height})"
    t = _table(title, cols, left=("kind", "vCPU", "lock", "state", "ran instead"))
    for r in shown.iter_rows(named=True):
        who = incident_role(r["kind"], r["guessed"])
        vcpu = f"{r['vm']}/{r['vcpu']}" if several else str(r["vcpu"])
        instead = "-" if r["ran_instead"] is None else f"pCPU {r['pcpu']}: {r['ran_instead']}"
        t.add_row(
            r["kind"],
            fmt_trace_time(r["start"], r["vm"], guest_clocks(a.summary.extra)),
            f"{vcpu} ({who})",
            fmt_lock(r["lock"]),
            r["state"] + (" (cut)" if r["truncated"] else ""),
            escape(instead),
            fmt_ns(r["dur"]),
            f"{r['n_waiters']:,}",
            fmt_ns(r["waste_ns"]),
        )
    _print(con, t, drop=("ran instead", "waiters", "state", "duration"), wrap=("start (trace time)", "vCPU"))
    if shown["guessed"].any():
        con.print(LIKELY_HOLDER_NOTE, highlight=False, soft_wrap=True)


def _convoys(con: Console, a: Analysis) -> None:
    conv = a.table("convoys")
    if conv.height == 0:
        return
    t = _table("Convoy lengths (hand-offs in a row)", ["length", "convoys"])
    for label, n in convoy_length_buckets(conv["length"]):
        t.add_row(label, f"{n:,}")
    _print(con, t)
    by = conv.group_by(pl.col("cause").fill_null("none")).len().sort("cause").iter_rows()
    causes = ", ".join(f"{_CONVOY_CAUSES.get(c, c)} {n:,}" for c, n in by)
    con.print(f"convoys by what started them: {causes}", highlight=False)


# A convoy's cause in words ('convoy causes: none: 28' read as no convoys; metrics.md: convoys)
_CONVOY_CAUSES = {"lhp": "LHP incident", "lwp": "LWP incident", "none": "contention alone"}


def convoy_length_buckets(lengths: pl.Series) -> list[tuple[str, int]]:
    """(label, convoys) per power-of-two bucket of lengths, shortest first: 2, 3-4, 5-8, ... (a row
    per distinct length runs to hundreds on a big trace)."""
    buckets: dict[int, int] = {}
    for length, n in lengths.value_counts().iter_rows():
        b = (int(length) - 1).bit_length()  # lengths in (2**(b-1), 2**b]
        buckets[b] = buckets.get(b, 0) + int(n)
    rows = []
    for b in sorted(buckets):
        hi = 1 << b
        lo = hi // 2 + 1
        rows.append((f"{lo}-{hi}" if hi > lo else str(hi), buckets[b]))
    return rows


def render_kvm_stat(con: Console, kvm: pl.DataFrame) -> None:
    """Each perf kvm stat block as perf prints it (Samples%, Time%), then what its exits imply."""
    for (inp, block), df in kvm.group_by(["input", "block"], maintain_order=True):
        first = df.row(0, named=True)
        scope = f", {first['scope']}" if first["scope"] else ""
        when = f" at {first['time']}" if first["time"] else ""
        con.print(
            f"[bold]perf kvm stat[/] table {block} of {escape(Path(inp).name)}: "
            f"{escape(first['key_kind'])}{escape(scope)}{when}",
            highlight=False,
            soft_wrap=True,
        )
        t = _table(
            "",
            [first["key_kind"], "samples", "samples %", "time %", "total time", "min", "mean", "max"],
            left=(first["key_kind"],),
        )
        for r in df.sort("n_samples", descending=True).iter_rows(named=True):
            total = r["total_ns"] if r["total_ns"] is not None else r["avg_ns"] * r["n_samples"]
            t.add_row(
                escape(r["key"]),
                f"{r['n_samples']:,}",
                f"{r['samples_pct']:.2f}",
                f"{r['time_pct']:.2f}",
                ("~" if r["total_ns"] is None else "") + fmt_ns(total),
                fmt_ns(r["min_ns"]),
                fmt_ns(r["avg_ns"]),
                fmt_ns(r["max_ns"]),
            )
        _print(con, t)
        if df["total_ns"].is_null().any():  # a bare '~31.4 s' did not say what it approximates
            con.print("~ total time: samples × mean (this table prints no total)", highlight=False)
    imp = kvm_stat_implications(kvm)
    if imp.height:
        t = _table(
            "What the exits imply for lock waiting", ["table", "exits", "exits %", "time %", "meaning"]
        )
        t.columns[0].justify = t.columns[1].justify = t.columns[4].justify = "left"
        for r in imp.iter_rows(named=True):
            name = {"pause": "PAUSE", "halt": "HLT/WFx", "hypercall": "hypercall"}[r["group"]]
            t.add_row(
                str(r["block"]),
                name,
                fmt_2dp(r["samples_pct"]),
                fmt_2dp(r["time_pct"]),
                IMPLICATION_GROUPS[r["group"]][1].split(": ", 1)[1]
                + (
                    " (unknown: this architecture's exits do not show them)"
                    if r["samples_pct"] is None
                    else ""
                ),
            )
        _print(con, t)


def render_lock_contention(con: Console, locks: pl.DataFrame) -> None:
    """Each perf lock contention block sorted by total wait, with its keys (type, caller, ...)."""
    for (inp, block), df in locks.group_by(["input", "block"], maintain_order=True):
        keys = [
            k for k in ("type", "caller", "pid", "comm", "address", "symbol") if df[k].is_not_null().any()
        ]
        con.print(
            f"[bold]perf lock contention[/] table {block} of {escape(Path(inp).name)}, by total wait",
            highlight=False,
            soft_wrap=True,
        )
        t = _table(
            "",
            ["contended", "total wait", "max wait", "avg wait", *keys],
            left=tuple(keys),
        )
        for r in df.sort("total_wait_ns", descending=True).iter_rows(named=True):
            cells = []
            for k in keys:
                v = r[k]
                cells.append("-" if v is None else fmt_lock(v) if k == "address" else escape(str(v)))
            t.add_row(
                f"{r['n_contended']:,}",
                fmt_ns(r["total_wait_ns"]),
                fmt_ns(r["max_wait_ns"]),
                fmt_ns(r["avg_wait_ns"]),
                *cells,
            )
        _print(con, t)


def limits_line(a: Analysis) -> str | None:
    """One closing line: what this trace cannot tell, and the pvtrace record command that would."""
    s = a.summary
    if not s.unavailable:
        return None
    if not s.extra.get("n_events") and any(k in a.tables for k in ("perf_kvm_stat", "perf_lock_contention")):
        return (
            "[bold]A summary table is not a trace:[/] spin waste, LHP/LWP incidents, convoys and kick "
            "latency need events. Capture with: on the host: sudo pvtrace record --host -o host.txt; "
            "in the guest: sudo pvtrace record --guest -o guest.txt."
        )
    gone = {u.metric for u in s.unavailable}
    labels = [_missing_label(key, gone) for key in _MISSING_LABELS if key in gone]
    if waits_unmeasured(a):
        labels.insert(0, "lock wait lengths (no contention_end events)")
    if {"n_lhp", "n_lhp_harmful"} <= gone:  # none of them, not just the harmless ones
        labels = [("LHP incidents" if x == _MISSING_LABELS["n_lhp"] else x) for x in labels]
    how: list[str] = []
    why: dict[str, list[str]] = {}  # an explanation, not a command -> the metrics it is about
    for u in s.unavailable:
        text = u.how_to_capture
        if "--lock-kind" in text or "LOCKDEP" in text or not text:
            continue
        if not text.startswith(CAPTURE_PLACES):
            if u.metric in _MISSING_LABELS:
                why.setdefault(text, []).append(_missing_label(u.metric, gone))
            continue
        how += [part for part in text.split("; ") if part not in how]
    lock_kind = any("--lock-kind" in u.how_to_capture for u in s.unavailable)
    quiet = "n_contended" in gone and recorded_guest(s.extra)
    if quiet:  # the lock events were recorded: asking to record them again would mislead
        how = [h for h in how if not h.startswith("in the guest: ")]
    text = "[bold]Not measured:[/] " + ", ".join(labels) + "."
    if quiet:
        text += (
            " No lock was contended while it was recorded: its steal samples say `pvtrace record --guest` "
            "took it, which records lock contention (lock:contention_begin/end)."
        )
    if how:
        text += " Capture with: " + "; ".join(how) + "."
    for explanation, about in why.items():
        what = ", ".join(about)
        text += f" {what[0].upper()}{what[1:]}: {explanation}."
    if lock_kind and "waste_lwp_ns" in gone:
        what = "LWP and convoys need" if "--lock-kind" in _how(s, "n_convoys") else "LWP needs"
        text += f" {what} each lock's kind: --lock-kind fifo (ticket, queued spinlocks) or unfair."
    return text


def recorded_guest(x: dict) -> bool:
    """The trace holds `pvtrace record --guest`'s steal samples (written beside the lock events it
    always enables)."""
    return bool((x.get("guest_preemption") or {}).get("n_steal_vcpus"))


# How analyze.fidelity.capture_command starts a command; any other how_to_capture explains.
CAPTURE_PLACES = ("on the host:", "in the guest:", "in the guest,")


def _missing_label(key: str, gone: set[str]) -> str:
    """The words for a missing metric; wait while halted stands for preempted too when both are."""
    if key == "wait_halted_ns" and "wait_preempted_ns" not in gone:
        return "wait while halted (pv slow path)"
    return _MISSING_LABELS[key]


def _how(s, metric: str) -> str:
    """How to capture an unavailable metric ('' when it is given)."""
    return next((u.how_to_capture for u in s.unavailable if u.metric == metric), "")
