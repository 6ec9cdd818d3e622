"""A pv kick (or directed yield) from a thread pvtrace cannot tie to a vCPU is never dropped in
silence: the analysis counts it apart and warns, and a --vcpu-map that names the thread brings it
into the pv kicks (new-user finding 8: an untimed excerpt of kvm_hypercall lines). Counts it
leaves out, or that a lossy trace misses, make the total a lower bound, listed as partial."""

from __future__ import annotations

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load

# `comm-pid: event: payload`: an excerpt without CPU or timestamps, of one thread named `t`
EXCERPT = (
    " t-1: kvm_hypercall: nr 0x0 a0 0x0 a1 0x0 a2 0x0 a3 0x0\n"
    " t-1: kvm_hypercall: nr 0x5 a0 0x0 a1 0x1 a2 0x0 a3 0x0\n"
    " t-1: kvm_hypercall: nr 0xb a0 0x1 a1 0x0 a2 0x0 a3 0x0\n"
)


def test_a_kick_from_an_unmapped_thread_is_counted_apart_and_warned(tmp_path):
    (tmp_path / "k.txt").write_text(EXCERPT)
    trace = load([tmp_path / "k.txt"])
    assert trace.events.filter(trace.events["kind"] == "pv_kick").height == 1  # ingest keeps it
    a = analyze(trace)
    assert a.summary.totals["n_kicks"] == 0
    assert a.summary.extra["n_kicks_unmapped"] == 1 and a.summary.extra["n_yields_unmapped"] == 1
    assert any("1 pv kick(s) and 1 directed yield(s)" in w for w in a.summary.extra["warnings"])
    # the 0 is not the whole: the summary lists pv kicks as a lower bound, with the fix
    (part,) = a.summary.extra["partial"]["n_kicks"]
    assert "1 kick(s) from threads not known as vCPUs" in part["missing"] and "--vcpu-map" in part["fix"]


def test_a_map_that_names_the_thread_counts_the_kick(tmp_path):
    (tmp_path / "k.txt").write_text(EXCERPT)
    (tmp_path / "map.csv").write_text("tid,pid,vm,vcpu\n1,1,vm0,0\n2,1,vm0,1\n")
    a = analyze(load([tmp_path / "k.txt"], vcpu_map_path=tmp_path / "map.csv"))
    assert a.summary.totals["n_kicks"] == 1
    assert "n_kicks_unmapped" not in a.summary.extra
    assert "n_kicks" not in a.summary.extra["partial"]
    assert not any("not known as vCPUs" in w for w in a.summary.extra.get("warnings", []))


def test_counts_of_a_trace_that_lost_events_are_lower_bounds(tmp_path):
    """A guest trace_pipe that lost events: its wait count misses the waits in the lost window."""
    lines = [
        " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-5 [000] 1.000002: contention_end: 0xffff888100000000 (ret=0)\n",
        "CPU:0 [LOST 120 EVENTS]\n",
        " t-5 [000] 1.000010: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-5 [000] 1.000012: contention_end: 0xffff888100000000 (ret=0)\n",
    ]
    (tmp_path / "g.txt").write_text("".join(lines))
    s = analyze(load([tmp_path / "g.txt"])).summary
    assert s.totals["n_contended"] >= 1 and s.fidelity["n_contended"] == "exact"
    (part,) = s.extra["partial"]["n_contended"]
    assert part["missing"].startswith("a lower bound: 1 lost-event window(s)")
    (tmp_path / "whole.txt").write_text("".join(ln for ln in lines if "LOST" not in ln))
    assert analyze(load([tmp_path / "whole.txt"])).summary.extra["partial"] == {}
