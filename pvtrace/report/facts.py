"""The trace's facts: where it came from, what it covers, how well, and what it cannot tell."""

from __future__ import annotations

from typing import Any

import polars as pl

from pvtrace.analyze.guest_summary import preemption_line
from pvtrace.analyze.partial import partial_note
from pvtrace.analyze.result import Analysis
from pvtrace.report.figure import Figure, no_data
from pvtrace.report.labels import METRIC_LABELS, fmt_count, fmt_metric, fmt_ns
from pvtrace.report.waste import waste_share
from pvtrace.summary import TOTAL_KEYS
from pvtrace.trace import Trace, vcpu_counts

MAX_LIST_ITEMS = 5


def _pairs(rows: list[tuple[str, str]], left: str = "fact", right: str = "value") -> pl.DataFrame:
    return pl.DataFrame(
        {left: [a for a, _ in rows], right: [b for _, b in rows]}, schema={left: pl.String, right: pl.String}
    )


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        shown = "; ".join(_text(v) for v in value[:MAX_LIST_ITEMS])
        more = len(value) - MAX_LIST_ITEMS
        return shown + (f" (and {more} more)" if more > 0 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return fmt_count(value)
    return str(value)


def facts_figure(trace: Trace, analysis: Analysis) -> Figure:
    """Source, format, span, CPUs, VMs, events, lost data."""
    m = trace.meta
    t0, t1 = trace.t_start, trace.t_end
    span = (
        f"{fmt_ns((t1 or 0) - (t0 or 0))} (from {t0:,} ns to {t1:,} ns)"
        if t0 is not None and t1 is not None
        else "empty"
    )
    rows = [
        ("source", _text(m.source) or "unknown"),
        ("format", m.format),
        ("view", f"{m.view} (what the producer could see)"),
        ("span", span),
        ("events", fmt_count(trace.events.height)),
        ("host CPUs", fmt_count(m.n_pcpus) if m.n_pcpus is not None else "unknown"),
        ("VMs", ", ".join(m.vms) if m.vms else "unknown"),
    ]
    if trace.events.height:
        by_origin = trace.events.group_by("origin").len().sort("origin")
        rows.append(("events by origin", ", ".join(f"{o}: {fmt_count(n)}" for o, n in by_origin.iter_rows())))
    lost = analysis.table("lost_windows")
    if lost.height:
        n_lost = lost["n_lost"].sum() if lost["n_lost"].null_count() < lost.height else None
        rows.append(
            (
                "lost events",
                f"{fmt_count(lost.height)} windows, {fmt_count(n_lost) if n_lost is not None else 'an unknown number of'} "
                "events lost (states inside them are unknown, never idle)",
            )
        )
    else:
        rows.append(("lost events", "none reported"))
    extra = analysis.summary.extra
    if "level" in extra:
        rows.append(("analysis fidelity", str(extra["level"])))
    if extra.get("guest_preemption"):  # the guest-inferred level's finding, as the terminal gives it
        rows.append(("vCPU preemption", preemption_line(extra["guest_preemption"])))
    if extra.get("unknown_state_ns"):
        rows.append(
            (
                "vCPU time in unknown state",
                f"{fmt_ns(extra['unknown_state_ns'])} (before first events or lost windows)",
            )
        )
    skipped = extra.get("skipped_lines") or {}
    if skipped.get("total"):
        reasons = ", ".join(f"{n:,} {kind}" for kind, n in sorted(skipped.get("by_reason", {}).items()))
        rows.append(
            (
                "input lines skipped",
                f"{fmt_count(skipped['total'])} ({reasons}; first: {skipped.get('first')})",
            )
        )
    rows.extend(("warning", str(w)) for w in extra.get("warnings") or [])
    if m.clock:
        rows.append(("clock", clock_text(m.clock)))
    scenario = m.extra.get("scenario")
    if isinstance(scenario, dict) and scenario.get("description"):
        rows.append(("simulated scenario", str(scenario["description"])))
    if "seed" in m.extra:
        rows.append(("simulator seed", str(m.extra["seed"])))
    return Figure("facts", "Trace", table=_pairs(rows))


def clock_text(clock: dict[str, Any]) -> str:
    """The trace's clock in words: how host and guest times were put on one timeline, and each
    guest's offset (with the estimate behind it, when one was made)."""
    if not clock.get("mode"):
        return _text(clock)
    parts = [str(clock["mode"])]
    for vm, offset in (clock.get("guest_offset_ns") or {}).items():
        est = ((clock.get("guests") or {}).get(vm) or {}).get("estimate") or {}
        text = f"{vm}: guest offset {fmt_ns(offset)}"
        if est.get("offset_ns") is not None:
            text += (
                f" (estimated {fmt_ns(est['offset_ns'])} ± {fmt_ns(est.get('uncertainty_ns'))} "
                + (f"drifting {est['drift_ppm']:+.2f} ppm " if est.get("drift_ppm") else "")
                + f"from {fmt_count(est.get('n_guest_events'))} guest events)"
            )
        parts.append(text)
    return "; ".join(parts)


def _lock_kinds(vm: str, declared: str, kinds: pl.DataFrame) -> str:
    """A VM's lock kind: the one the trace declares (a simulated run's), else its locks' kinds as
    the analysis found them (`analyze` prints the same counts)."""
    if declared != "unknown":
        return declared
    mine = kinds.filter(pl.col("vm") == vm)["kind"].value_counts(sort=True)
    if mine.height == 0:
        return "unknown (no contended lock)"
    found = ", ".join(f"{n} {k}" for k, n in mine.iter_rows())
    return f"{found} (from the trace)"


def vms_figure(trace: Trace, analysis: Analysis | None = None) -> Figure:
    """One row per VM: vCPUs and lock kind/algorithm."""
    if not trace.meta.vms:
        return no_data("vms", "VMs", "the trace does not say which VMs it saw")
    n = vcpu_counts(trace.events, trace.meta)  # as analyze counts them, not max index + 1
    kinds = (
        analysis.table("lock_kinds")
        if analysis is not None
        else pl.DataFrame(schema={"vm": pl.String, "kind": pl.String})
    )
    table = pl.DataFrame(
        {
            "VM": list(trace.meta.vms),
            "vCPUs": [str(n[vm]) if n.get(vm) else "unknown" for vm in trace.meta.vms],
            "lock kind": [_lock_kinds(vm, v.lock_kind, kinds) for vm, v in trace.meta.vms.items()],
            "lock algorithm": [v.lock_algorithm or "unknown" for v in trace.meta.vms.values()],
        }
    )
    return Figure("vms", "VMs", table=table)


def headline_figure(analysis: Analysis) -> Figure:
    """Every summary total the trace gives, with its fidelity level (the others are in the limits box)."""
    s = analysis.summary
    rows = []
    for key in TOTAL_KEYS:
        if key in s.totals:
            value = fmt_metric(key, s.totals[key]) + partial_note(s.extra, key)
        else:
            continue
        rows.append((METRIC_LABELS.get(key, key), key, value, s.fidelity.get(key, "")))
    if not rows:
        return no_data("headline", "All metrics", "the analysis has no totals")
    table = pl.DataFrame(
        rows,
        schema={"metric": pl.String, "key": pl.String, "value": pl.String, "fidelity": pl.String},
        orient="row",
    )
    return Figure(
        "headline",
        "All metrics",
        table=table,
        caption="Totals over the whole trace. Fidelity says how each was obtained: exact, inferred, "
        "guest-inferred (vCPU preemption from the guest's ticks and steal samples), host-only (estimated "
        "from PAUSE exits) or guest-only.",
    )


def _total(analysis: Analysis, key: str) -> str:
    s = analysis.summary
    if key in s.totals:
        return fmt_metric(key, s.totals[key])
    return "unavailable" if key in {u.metric for u in s.unavailable} else "n/a"


def _contended(analysis: Analysis) -> str:
    total = _total(analysis, "n_acquisitions")
    of = (
        f" of {total}" if total not in ("unavailable", "n/a") else " (uncontended ones are not in this trace)"
    )
    return _total(analysis, "n_contended") + of


def key_numbers_figure(analysis: Analysis) -> Figure:
    """The few numbers that say where the time went, in words."""
    t = analysis.summary.totals
    fidelity = analysis.summary.fidelity
    waste_label, waste = "spin waste (LHP + LWP)", None
    if "waste_lhp_ns" in t:
        got = waste_share(analysis)  # the share `pvtrace analyze` prints
        share = f", {got[1]:.2f}% of vCPU running time" if got else ""
        waste = (
            f"{fmt_ns(t['waste_lhp_ns'] + t.get('waste_lwp_ns', 0))}{share} (LHP {fmt_ns(t['waste_lhp_ns'])}"
        )
        if "waste_lwp_ns" in t:
            waste += f", LWP {fmt_ns(t['waste_lwp_ns'])})" + partial_note(
                analysis.summary.extra, "spin_waste"
            )
        else:
            waste_label = "spin waste (LHP only)"
            waste += "; LWP needs each lock's kind: --lock-kind)" + partial_note(
                analysis.summary.extra, "waste_lhp_ns"
            )
    spin = _total(analysis, "spin_ns")
    if fidelity.get("spin_ns") == "host-only":
        spin += " (estimated from PAUSE exits: no lock events, so it is not split per lock)"

    def detailed(key: str, detail: str) -> str:
        return f"{_total(analysis, key)} ({detail})" if key in t else _total(analysis, key)

    if "n_lhp" in t:
        lhp = detailed("n_lhp", f"{_total(analysis, 'n_lhp_harmful')} harmful: a waiter spun")
    elif "n_lhp_harmful" in t:
        lhp = f"{_total(analysis, 'n_lhp_harmful')} harmful (benign ones are invisible at this fidelity)"
    else:
        lhp = _total(analysis, "n_lhp")
    rows = [
        (waste_label, waste),
        ("spin (waiting while running)", spin),
        ("LHP incidents", lhp),
        (
            "LWP incidents",
            detailed(
                "n_lwp",
                f"next owner preempted {_total(analysis, 'n_lwp_preempted')}, halted {_total(analysis, 'n_lwp_halted')}",
            ),
        ),
        ("convoys", detailed("n_convoys", f"longest {_total(analysis, 'convoy_len_max')} hand-offs")),
        ("contended acquisitions", _contended(analysis)),
        ("pause exits, pv kicks", f"{_total(analysis, 'n_pause_exits')}, {_total(analysis, 'n_kicks')}"),
    ]
    rows = [(k, v) for k, v in rows if v is not None and not v.startswith(("unavailable", "n/a"))]
    extra = analysis.summary.extra
    for key, label in (
        ("spin_ns", "spin (waiting while running)"),
        ("n_lhp_harmful", "LHP incidents"),
        ("n_lwp", "LWP incidents"),
        ("n_convoys", "convoys"),
        ("n_contended", "contended acquisitions"),
    ):
        # what the number leaves out (analyze.partial), as the terminal says it
        rows = [(k, v + partial_note(extra, key) if k == label else v) for k, v in rows]
    if analysis.summary.extra.get("wait_ns") and "n_contended" in t:
        rows.append(("total lock wait", fmt_ns(analysis.summary.extra["wait_ns"])))
    level = analysis.summary.extra.get("level")
    caption = f"Analysis fidelity: {level}." if level else ""
    if analysis.summary.unavailable:
        caption += " What the trace cannot give is listed at the end of the page."
    return Figure(
        "key-numbers", "Where the time went", table=_pairs(rows, "measure", "value"), caption=caption
    )


def problem_rows(problems: dict[str, Any], where: str = "") -> list[tuple[str, str, str]]:
    """(where, count, details) rows from TraceMeta.problems, however deeply it is nested.

    An entry with a "count" is one problem kind (ingest's layout: {file: {kind: {count, what, samples}}});
    anything else is shown as it is.
    """
    rows = []
    for key, value in problems.items():
        here = f"{where} {key}".strip()
        if isinstance(value, dict) and "count" in value:
            samples = value.get("samples") or []
            shown = "; ".join(
                f"line {s.get('line')}: {s.get('text', '')}" if isinstance(s, dict) else _text(s)
                for s in samples[:MAX_LIST_ITEMS]
            )
            details = str(value.get("what", ""))
            if shown:
                details = f"{details} (e.g. {shown})" if details else shown
            rows.append(
                (
                    here,
                    fmt_count(value["count"]) if isinstance(value["count"], int) else str(value["count"]),
                    details,
                )
            )
        elif isinstance(value, dict) and value:
            rows.extend(problem_rows(value, here))
        else:
            rows.append((here, "", _text(value)))
    return rows


def problems_figure(trace: Trace) -> Figure:
    """What the ingester met and could not read (malformed lines, unknown events, ...)."""
    name, title = "problems", "Problems met while ingesting"
    rows = problem_rows(trace.meta.problems)
    if not rows:
        return no_data(name, title, "none reported")
    table = pl.DataFrame(
        rows, schema={"where / what": pl.String, "count": pl.String, "details": pl.String}, orient="row"
    )
    return Figure(name, title, table=table)
