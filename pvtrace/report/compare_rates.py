"""Rates that let runs of different length compare: counts per second of trace, times summed
over vCPUs per vCPU-second (a share of vCPU time). `compare` shows them beside the totals."""

from __future__ import annotations

from pvtrace.analyze.result import Analysis
from pvtrace.fmt import fmt_ns
from pvtrace.summary import SPIN_SPLIT_KEYS, TOTAL_KEYS
from pvtrace.trace import Trace

# How a metric is made comparable between runs of different length: counts per second of trace,
# times summed over vCPUs per vCPU-second (span x vCPUs seen: the share of vCPU time). The rest
# (maxima, medians, percentiles, shares, the span itself) compare as they are.
PER_VCPU_S = (*SPIN_SPLIT_KEYS, "wait_ns", "wait_halted_ns", "wait_preempted_ns", "running_ns")
PER_S = tuple(k for k in TOTAL_KEYS if k.startswith("n_"))


def rate_basis(key: str) -> str | None:
    """'vcpu_s', 's' or None (compared as it is)."""
    return "vcpu_s" if key in PER_VCPU_S else "s" if key in PER_S else None


def run_extent(analysis: Analysis, trace: Trace | None) -> dict[str, int | None]:
    """What a run's rates divide by: its trace span (ns) and the vCPUs its analysis saw (a run
    given as its summary JSON, no trace: the span the summary gives)."""
    span = None
    if trace is not None and trace.t_start is not None and trace.t_end is not None:
        span = trace.t_end - trace.t_start
    elif trace is None and analysis.summary.extra.get("t_end") is not None:
        span = analysis.summary.extra["t_end"] - (analysis.summary.extra.get("t_start") or 0)
    n = analysis.summary.extra.get("n_vcpus")
    return {"span_ns": span if span else None, "n_vcpus": int(n) if n else None}


def _per(extent: dict[str, int | None], basis: str) -> float | None:
    """The divisor of a basis in seconds (or vCPU-seconds), None when the run does not give it."""
    span = extent["span_ns"]
    if span is None or (basis == "vcpu_s" and extent["n_vcpus"] is None):
        return None
    return span / 1e9 * (extent["n_vcpus"] if basis == "vcpu_s" else 1)


def rates(
    key: str, va: float | None, vb: float | None, ext: tuple[dict[str, int | None], ...]
) -> tuple[str | None, float | None, float | None]:
    """(basis, A's rate, B's rate) of one metric; a time per vCPU-second is written in percent."""
    basis = rate_basis(key)
    if basis is None:
        return None, None, None
    scale = 100.0 / 1e9 if basis == "vcpu_s" else 1.0
    out = []
    for v, e in zip((va, vb), ext, strict=True):
        per = _per(e, basis)
        out.append(None if v is None or per is None else v * scale / per)
    return basis, out[0], out[1]


def fmt_rate(basis: str, v: float | None, signed: bool = False) -> str:
    """A rate as format_comparison writes it: `1,234/s`, or a share of vCPU time `3.25%`."""
    if v is None:
        return "unavailable"
    sign = "+" if signed and v > 0 else ""
    if basis == "vcpu_s":
        return f"{sign}{v:.2f} pts" if signed else f"{v:.2f}%"
    return f"{sign}{v:,.0f}/s" if abs(v) >= 100 else f"{sign}{v:.3g}/s"


def extent_text(label: str, extent: dict[str, int | None]) -> str:
    """`ticket: 100 ms of trace, 8 vCPUs` (what its rates divide by)."""
    span = fmt_ns(extent["span_ns"]) if extent["span_ns"] is not None else "unknown length"
    n = extent["n_vcpus"]
    return f"{label}: {span} of trace, {n if n is not None else 'unknown'} vCPUs"


RATE_CAPTION = (
    "Rates: counts per second of trace; times summed over vCPUs as a share of vCPU time "
    "(span × vCPUs seen). Δ is B − A of the rates where both runs give them (so runs of "
    "different length compare), else of the values; Δ % is relative to A."
)
