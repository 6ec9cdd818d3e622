"""A pv kick (or directed yield) from a thread pvtrace cannot tie to a vCPU is never dropped in
silence: the analysis counts it apart and warns, and a --vcpu-map that names the thread brings it
into the pv kicks (new-user finding 8: an untimed excerpt of kvm_hypercall lines)."""

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


def test_a_map_that_names_the_thread_counts_the_kick(tmp_path):
    (tmp_path / "k.txt").write_text(EXCERPT)
    (tmp_path / "map.csv").write_text("tid,pid,vm,vcpu\n1,1,vm0,0\n2,1,vm0,1\n")
    a = analyze(load([tmp_path / "k.txt"], vcpu_map_path=tmp_path / "map.csv"))
    assert a.summary.totals["n_kicks"] == 1
    assert "n_kicks_unmapped" not in a.summary.extra
    assert not any("not known as vCPUs" in w for w in a.summary.extra.get("warnings", []))
