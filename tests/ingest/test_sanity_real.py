"""The sanity property on real traces (issue 17's acceptance): any record mutation of a real trace
either changes no metric or is reported (a counted problem, an excluded span, a --strict error, or
the analysis's warning of lock events out of sequence). Two records printed at the same instant are
never swapped (mutations.py): either order is a valid trace, which no timestamp can tell apart.

Real captures from ../shared/real-traces, read in place: the first lines of the local pv-qspinlock
guest captures in the three text formats (ftrace, trace-cmd report, perf script) and two public KVM
host excerpts. A head of a capture keeps each example to a fraction of a second.
"""

from __future__ import annotations

import lzma
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import HOWS, data_lines, mutate, problem_count

from pvtrace.analyze import analyze
from pvtrace.errors import FormatError
from pvtrace.ingest.load import load

HEAD_LINES = 3000
TRACES = (
    "local/guest-pvqspinlock-futex-ftrace.txt.xz",
    "local/guest-pvqspinlock-futex-tracecmd.txt.xz",
    "local/guest-pvqspinlock-futex-perf.txt.xz",
    "public/ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt",
    "public/tracecmd-report_kvm-host-nested-oldfmt_kernel-5.1-5.2_kvm-list-2019-07-08.txt",
)
# what the analysis computes, as numbers (the summary's totals and its figures of context)
CONTEXT = ("t_start", "t_end", "n_events", "n_vcpus", "n_locks", "running_ns", "wait_ns", "n_open_waits")


@cache
def _lines(path: str) -> tuple[str, ...]:
    """The first HEAD_LINES lines of a capture (decompressed as a stream: only the head is read)."""
    opener = lzma.open if path.endswith(".xz") else open
    out = []
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
        for line in f:
            out.append(line)
            if len(out) == HEAD_LINES:
                break
    return tuple(out)


def _outcome(path: Path, strict: bool = False):
    trace = load([path], strict=strict)
    a = analyze(trace)
    problems = problem_count(trace.meta.problems)
    metrics = {**a.summary.totals, **{k: a.summary.extra.get(k) for k in CONTEXT}}
    return metrics, problems, a.table("lost_windows").height, len(a.summary.extra.get("warnings", []))


@pytest.fixture(scope="module")
def heads(real_traces: Path, tmp_path_factory) -> dict[str, tuple[Path, tuple]]:
    """Each trace's head as a plain file, and the outcome of analyzing it unchanged."""
    d = tmp_path_factory.mktemp("heads")
    out = {}
    for name in TRACES:
        head = d / Path(name).name.removesuffix(".xz")
        head.write_text("".join(_lines(str(real_traces / name))))
        out[name] = (head, _outcome(head))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(TRACES),
    pick=st.integers(0, 10**6),
    how=st.sampled_from(HOWS),
    amount=st.integers(0, 500_000),
)
def test_a_mutated_record_of_a_real_trace_changes_no_metric_or_is_reported(
    heads, tmp_path_factory, name, pick, how, amount
):
    head, (base_metrics, base_problems, base_lost, base_warnings) = heads[name]
    lines = list(_lines(str(head)))
    data = data_lines(lines)
    i = data[pick % len(data)]
    mutated = tmp_path_factory.mktemp("m") / head.name
    mutated.write_text("".join(mutate(lines, i, how, amount)))
    metrics, problems, lost, warnings = _outcome(mutated)
    reported = problems > base_problems or lost > base_lost or warnings > base_warnings
    assert metrics == base_metrics or reported, (name, how, i, amount)
    if problems > base_problems:
        with pytest.raises(FormatError):
            _outcome(mutated, strict=True)
