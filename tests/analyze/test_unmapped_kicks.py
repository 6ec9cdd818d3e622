"""A pv kick (or directed yield) from a thread pvtrace cannot tie to a vCPU is never dropped in
silence: the analysis counts it apart and warns, and a --vcpu-map that names the thread brings it
into the pv kicks (new-user finding 8: an untimed excerpt of kvm_hypercall lines). Counts it
leaves out, or that a lossy trace misses, make the total a lower bound, listed as partial."""

from __future__ import annotations

from typer.testing import CliRunner

from pvtrace.analyze import analyze
from pvtrace.cli.app import app
from pvtrace.cli.summary_view import headline
from pvtrace.ingest.load import load
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset

runner = CliRunner()

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
    assert a.summary.extra["n_kicks_unmapped"] == 1 and a.summary.extra["n_yields_unmapped"] == 1
    assert any("1 pv kick(s) and 1 directed yield(s)" in w for w in a.summary.extra["warnings"])
    # every kick is unattributed: the count is unavailable, with why and the fix, never `0 exact`
    assert "n_kicks" not in a.summary.totals and "n_kicks" not in a.summary.fidelity
    (gone,) = [u for u in a.summary.unavailable if u.metric == "n_kicks"]
    assert "not known as vCPUs" in gone.how_to_capture and "--vcpu-map" in gone.how_to_capture
    res = runner.invoke(app, ["analyze", str(tmp_path / "k.txt")])
    assert res.exit_code == 0 and "pv kicks │" not in res.stdout, res.output


def test_kicks_partly_unattributed_are_a_lower_bound_in_every_view(tmp_path):
    """One kick from a mapped thread, one from an unknown one: 1, listed and shown as partial."""
    (tmp_path / "k.txt").write_text(EXCERPT + " u-7: kvm_hypercall: nr 0x5 a0 0x0 a1 0x1 a2 0x0 a3 0x0\n")
    (tmp_path / "map.csv").write_text("tid,pid,vm,vcpu\n1,1,vm0,0\n2,1,vm0,1\n")
    a = analyze(load([tmp_path / "k.txt"], vcpu_map_path=tmp_path / "map.csv"))
    assert a.summary.totals["n_kicks"] == 1
    (part,) = a.summary.extra["partial"]["n_kicks"]
    assert "1 kick(s) from threads not known as vCPUs" in part["missing"] and "--vcpu-map" in part["fix"]
    rows, notes = headline(a)
    (row,) = [r for r in rows if r[0].startswith("pv kicks")]
    assert row[0] == "pv kicks (partial [1])"
    assert notes[0].startswith("[1] partial: a lower bound: 1 kick(s)") and "--vcpu-map" in notes[0]


def test_a_map_that_names_the_thread_counts_the_kick(tmp_path):
    (tmp_path / "k.txt").write_text(EXCERPT)
    (tmp_path / "map.csv").write_text("tid,pid,vm,vcpu\n1,1,vm0,0\n2,1,vm0,1\n")
    a = analyze(load([tmp_path / "k.txt"], vcpu_map_path=tmp_path / "map.csv"))
    assert a.summary.totals["n_kicks"] == 1
    assert "n_kicks_unmapped" not in a.summary.extra
    assert "n_kicks" not in a.summary.extra["partial"]
    assert not any("not known as vCPUs" in w for w in a.summary.extra.get("warnings", []))


# One wait on CPU 0: its contention_begin and contention_end at the times given.
WAIT = (
    " t-5 [000] {0}: contention_begin: 0xffff888100000000 (flags=SPIN)\n"
    " t-5 [000] {1}: contention_end: 0xffff888100000000 (ret=0)\n"
)


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
    assert part["missing"] == "a lower bound: 120 events lost" and s.extra["n_events_lost"] == 120
    res = runner.invoke(app, ["analyze", str(tmp_path / "g.txt")])
    assert res.exit_code == 0, res.output
    assert "contended (lock waits) (partial [1])" in res.stdout  # on the count's own row
    assert "[1] partial: a lower bound: 120 events lost; fix: record with a bigger buffer" in res.stdout
    assert "lost events: 120 events lost in 1 window(s)" in res.stdout
    (tmp_path / "whole.txt").write_text("".join(ln for ln in lines if "LOST" not in ln))
    assert analyze(load([tmp_path / "whole.txt"])).summary.extra["partial"] == {}
    (tmp_path / "nocount.txt").write_text("".join(lines).replace("LOST 120 EVENTS", "LOST EVENTS"))
    s = analyze(load([tmp_path / "nocount.txt"])).summary
    assert (
        s.extra["partial"]["n_contended"][0]["missing"]
        == "a lower bound: events lost (the trace gives no count)"
    )


def test_a_window_around_a_broken_timestamp_is_not_called_a_tracers_loss(tmp_path):
    """A garbled timestamp makes a window excluded like lost events, but no bigger buffer fixes it:
    the part names the broken record, and a tracer's loss beside it keeps its own fix."""
    lines = [
        " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-5 [000] 1.000002: contention_end: 0xffff888100000000 (ret=0)\n",
        " t-5 [000] 6.000004: contention_begin: 0xffff888100000000 (flags=SPIN)\n",  # 1.000004 garbled
        " t-5 [000] 1.000006: contention_end: 0xffff888100000000 (ret=0)\n",
        " t-5 [000] 1.000010: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-5 [000] 1.000012: contention_end: 0xffff888100000000 (ret=0)\n",
    ]
    (tmp_path / "g.txt").write_text("".join(lines))
    s = analyze(load([tmp_path / "g.txt"])).summary
    assert s.extra["skipped_lines"]["by_reason"] == {"time_spike": 1} and s.extra["n_lost_windows"] == 1
    (part,) = s.extra["partial"]["n_contended"]
    assert part["missing"] == "a lower bound: 1 record(s) with a broken timestamp"
    assert "bigger buffer" not in part["fix"] and "skipped lines" in part["fix"]
    res = runner.invoke(app, ["analyze", str(tmp_path / "g.txt")])
    assert res.exit_code == 0, res.output
    assert "broken timestamps: 1 record(s) with a broken timestamp in 1 window(s)" in res.stdout
    assert "lost events:" not in res.stdout
    (tmp_path / "both.txt").write_text("".join(lines[:4]) + "CPU:0 [LOST 120 EVENTS]\n" + "".join(lines[4:]))
    (part,) = analyze(load([tmp_path / "both.txt"])).summary.extra["partial"]["n_contended"]
    assert part["missing"] == "a lower bound: 120 events lost, and 1 record(s) with a broken timestamp"
    assert part["fix"].startswith("record with a bigger buffer") and "skipped lines" in part["fix"]


def test_a_trace_whose_waits_have_no_length_gives_no_wait_total(tmp_path):
    """Contention begins without ends: wait_ns is null (unavailable), never 0."""
    lines = [
        " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-6 [001] 1.000004: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
    ]
    (tmp_path / "g.txt").write_text("".join(lines))
    assert analyze(load([tmp_path / "g.txt"])).summary.extra["wait_ns"] is None


def test_lost_events_make_counts_lower_bounds_and_the_split_of_spin_uncertain(tmp_path):
    """A lost window can only hide time and events from the totals of what the trace shows (spin,
    waits, contentions); the split of spin and the incidents around it may move either way (the
    audit: useful and unattributed spin above the truth under "a lower bound")."""
    trace, _ = simulate_trace(load_preset("lhp-demo"), seed=1)
    paths = [p for p in write_rendered(trace, "ftrace", "merged", tmp_path / "h.txt") if p.suffix == ".txt"]
    host = tmp_path / "h.txt"
    lines = host.read_text().splitlines(keepends=True)
    lines.insert(len(lines) // 2, "CPU:1 [LOST 40 EVENTS]\n")
    host.write_text("".join(lines))
    s = analyze(load(paths)).summary
    parts = {k: v[0]["missing"] for k, v in s.extra["partial"].items() if v}
    for key in ("spin_ns", "wait_preempted_ns", "n_contended"):
        assert parts[key] == "a lower bound: 40 events lost", key
    for key in ("spin_useful_ns", "waste_lhp_ns", "n_lhp_harmful"):
        assert parts[key].startswith("may be off either way: 40 events lost"), key


def test_events_overwritten_before_the_buffers_start_are_counted_by_the_header(tmp_path):
    """A ring buffer that wrapped: ftrace prints '##### CPU 0 buffer started ####' with no count, and
    the header's entries-in-buffer/entries-written gives it; the part said "the trace gives no
    count" beside "ring buffer overwritten: 20 older events lost" (new-user audit of record)."""
    header = "# tracer: nop\n#\n# entries-in-buffer/entries-written: 4/24   #P:1\n#\n"
    waits = [WAIT.format(*t) for t in (("1.000000", "1.000002"), ("1.000010", "1.000012"))]
    (tmp_path / "g.txt").write_text(header + "##### CPU 0 buffer started ####\n" + "".join(waits))
    s = analyze(load([tmp_path / "g.txt"])).summary
    assert s.extra["n_events_overwritten"] == 20 and s.extra["n_lost_windows"] == 1
    (part,) = s.extra["partial"]["n_contended"]
    assert (
        part["missing"]
        == "a lower bound: events lost (20 overwritten before the buffers' start, by the header)"
    )
