"""What `pvtrace analyze` shows and writes (issue 14): the terminal summary a perf user reads,
perf summary tables as inputs, stdout JSON/CSV, one lock-id notation, filters, full width."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from test_exact import LWP_ROWS
from trace_rows import acquire, contend, preempt, release, run, trace_of
from typer.testing import CliRunner

from pvtrace.analyze import analyze
from pvtrace.cli.app import app
from pvtrace.fmt import clock_tick, fmt_ns, fmt_ts, fmt_wait, plural
from pvtrace.trace import write_trace

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
LOCK = 0xFFFF88810A400140

# v0 holds the lock and is preempted on pCPU 0 at 1 s + 10 us; v2 runs there in its place; v1 spins.
SECOND = 1_000_000_000
LHP_ROWS = [
    run(0, SECOND, pcpu=0),
    run(1, SECOND, pcpu=1),
    acquire(0, SECOND + 1_000, lock=LOCK),
    contend(1, SECOND + 2_000, lock=LOCK),
    preempt(0, SECOND + 10_000, pcpu=0),
    run(2, SECOND + 10_000, pcpu=0),
    preempt(2, SECOND + 50_000, pcpu=0),
    run(0, SECOND + 50_000, pcpu=0),
    release(0, SECOND + 51_000, lock=LOCK),
    acquire(1, SECOND + 52_000, lock=LOCK),
    release(1, SECOND + 53_000, lock=LOCK),
]


def _file(tmp_path, rows, name="t.parquet", t_end=None):
    path = tmp_path / name
    write_trace(trace_of(rows, t_end=t_end if t_end is not None else rows[-1][0] + 1_000), path)
    return path


def test_units_are_readable_and_spelled_once():
    assert fmt_ns(17_137_027_000) == "17.1 s"
    assert fmt_ns(420) == "420 ns" and fmt_ns(3_200) == "3.2 µs" and fmt_ns(5_620_000) == "5.62 ms"
    assert fmt_ts(1938_454793000) == "1938.454793" and fmt_ts(1938_454793123) == "1938.454793123"
    assert plural(1, "reason") == "1 reason" and plural(2, "reason") == "2 reasons"


def test_worst_incident_has_trace_timestamp_holder_and_what_ran_instead(tmp_path):
    src = _file(tmp_path, LHP_ROWS)
    res = runner.invoke(app, ["analyze", str(src)])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Worst incidents" in out
    line = next(x for x in out.splitlines() if x.startswith("│ LHP  "))
    # absolute timestamp as ftrace prints it, the holder, the lock in hex, what took its pCPU
    assert "1.000010" in line and "0 (holder)" in line and f"{LOCK:#x}" in line
    assert "pCPU 0: vm0/2" in line and "40 µs" in line
    assert "us " not in out.replace("µs", "")  # one spelling of microseconds


def test_guest_only_summary_has_no_unavailable_rows_and_one_capture_line(tmp_path):
    rows = [r for r in LWP_ROWS if r[1] in ("lock_contend", "lock_acquire")]
    src = _file(tmp_path, rows, t_end=40)
    res = runner.invoke(app, ["analyze", str(src)])
    assert res.exit_code == 0, res.output
    assert "unavailable" not in res.stdout
    assert (
        res.stdout.count("sudo pvtrace record --host") == 1 and "trace-cmd record -e sched" not in res.stdout
    )
    assert "Locks by total wait" in res.stdout and "total wait" in res.stdout


def test_guest_waits_below_the_clock_resolution_are_not_zero():
    sample = REPO / "sample-traces" / "guest-futex.txt.xz"
    res = runner.invoke(app, ["analyze", str(sample)])
    assert res.exit_code == 0, res.output
    assert "< 1 µs" in res.stdout and "│ 0 ns" not in res.stdout


def test_callers_per_lock_from_recorded_stacks(real_traces):
    trace = real_traces / "local" / "guest-pvqspinlock-mix-stacktrace-ftrace.txt.xz"
    res = runner.invoke(app, ["analyze", str(trace), "--csv", "-", "--table", "lock_callers"])
    assert res.exit_code == 0, res.output
    callers = pl.read_csv(res.stdout.encode())
    assert callers.height > 0 and callers["lock"].str.starts_with("0x").all()
    assert "futex_wait_setup" in callers["caller"].to_list()
    assert not callers["caller"].str.contains("spin_lock|slowpath|trace_event").any()
    res = runner.invoke(app, ["analyze", str(trace)])
    assert "top callers" in res.stdout and "futex_wait_setup" in res.stdout


def test_host_trace_shows_the_exit_reason_table(real_traces):
    trace = real_traces / "public" / "ftrace-5flag_kvm-host-L1-nested-vmx_lkml-2023-03-30.txt"
    res = runner.invoke(app, ["analyze", str(trace)])
    assert res.exit_code == 0, res.output
    assert "VM exits by reason" in res.stdout
    assert "CR_ACCESS" in res.stdout and "EXTERNAL_INTERRUPT" in res.stdout


@pytest.mark.parametrize(
    "name",
    [
        "perf-kvm-stat-live_x86-vmx-two-tables_kvm-list-2019-10-15.txt",
        "perf-kvm-stat-report_arm64-vcpu-filter_kvmarm-2022-11-05.txt",
        "perf-kvm-stat-report_arm64-vmexit-and-trap_kvmarm-2019-06-12.txt",
        "perf-kvm-stat-report_hist-style-ns-columns_riscv_kvm-list-2024-04-22.txt",
        "perf-lock-contention_bpf_per-thread-pid-comm_lkml-2022-12.txt",
        "perf-lock-contention_bpf_type-caller_aarch64-6.1_lkml-2024-03-21.txt",
        "perf-lock-contention_bpf_type-caller_x86_lkml-2022-07-29.txt",
    ],
)
def test_perf_summary_tables_are_shown_and_written(real_traces, tmp_path, name):
    path = real_traces / "public" / name
    res = runner.invoke(app, ["analyze", str(path), "--out-dir", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert "0 events" not in res.stdout and "unavailable" not in res.stdout
    kind = "perf_kvm_stat" if "kvm-stat" in name else "perf_lock_contention"
    table = pl.read_parquet(tmp_path / "t" / f"{kind}.parquet")
    assert table.height > 0
    shown = table.row(0, named=True)
    if kind == "perf_kvm_stat":
        assert "samples %" in res.stdout and "time %" in res.stdout and shown["key"] in res.stdout
        assert "What the exits imply" in res.stdout
        # a total perf does not print is marked '~' and the mark is explained, else neither
        approximated = table["total_ns"].is_null().any()
        assert any(line.startswith("│") and " ~" in line for line in res.stdout.splitlines()) is approximated
        assert ("~ total time: samples × mean" in res.stdout) is approximated
    else:
        top = table.sort("total_wait_ns", descending=True).row(0, named=True)
        assert fmt_ns(top["total_wait_ns"]) in res.stdout
        assert (top["caller"] or top["comm"]) in res.stdout
    js = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert len(js[kind]["rows"]) == table.height


def _implications(real_traces, name: str, block: int) -> dict[str, dict]:
    """One block of a real perf kvm stat table's implications, by group, from `analyze --json`."""
    res = runner.invoke(app, ["analyze", str(real_traces / "public" / name), "--json", "-"])
    assert res.exit_code == 0, res.output
    imp = pl.DataFrame(json.loads(res.stdout)["perf_kvm_stat"]["implications"])
    return {r["group"]: r for r in imp.filter(pl.col("block") == block).iter_rows(named=True)}


def test_kvm_stat_implications_give_pause_hlt_and_hypercall_shares(real_traces):
    first = _implications(real_traces, "perf-kvm-stat-live_x86-vmx-two-tables_kvm-list-2019-10-15.txt", 0)
    assert first["pause"]["samples_pct"] == pytest.approx(0.04)
    assert first["halt"]["samples_pct"] == pytest.approx(75.33) and first["halt"][
        "time_pct"
    ] == pytest.approx(99.66)
    assert first["hypercall"]["samples_pct"] == pytest.approx(10.5)


def test_arm64_wfx_exits_hide_the_spinning_share(real_traces):
    """arm64 traps WFE and KVM answers it with a directed yield, as a PAUSE exit on x86; perf kvm
    stat prints WFI and WFE as one class, WFx: the spinning share is unknown, not 0 (new-user audit)."""
    wfx = _implications(real_traces, "perf-kvm-stat-report_arm64-vmexit-and-trap_kvmarm-2019-06-12.txt", 1)
    assert wfx["halt"]["samples_pct"] == pytest.approx(93.8)
    assert wfx["pause"]["samples_pct"] is None and wfx["pause"]["n_samples"] is None


def test_riscv_guest_sbi_calls_are_hypercalls(real_traces):
    # a RISC-V guest's ecall (VS-mode) exits as SUPERVISOR_SYSCALL: an SBI call, its hypercall
    path = real_traces / "public" / "perf-kvm-stat-report_hist-style-ns-columns_riscv_kvm-list-2024-04-22.txt"
    res = runner.invoke(app, ["analyze", str(path), "--json", "-"])
    assert res.exit_code == 0, res.output
    imp = {r["group"]: r for r in json.loads(res.stdout)["perf_kvm_stat"]["implications"]}
    assert imp["hypercall"]["n_samples"] == 1019 and imp["hypercall"]["samples_pct"] == pytest.approx(2.0)
    # no pause-loop exiting on RISC-V, and its WFI exits hide among VIRTUAL_INST_FAULT: unknown, not 0
    for group in ("pause", "halt"):
        assert imp[group]["samples_pct"] is None and imp[group]["n_samples"] is None, imp[group]
    res = runner.invoke(app, ["analyze", str(path), "--width", "250"])
    rows = [line for line in res.stdout.splitlines() if "│ PAUSE " in line or "│ HLT/WFx " in line]
    assert len(rows) == 2 and all("unknown: this architecture" in r and "0.00" not in r for r in rows), rows


def test_json_and_csv_to_stdout(tmp_path, monkeypatch):
    src = _file(tmp_path, LHP_ROWS)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["analyze", str(src), "--json", "-"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["totals"]["n_lhp"] == 1
    assert not (tmp_path / "-").exists()
    res = runner.invoke(app, ["analyze", str(src), "--csv", "-"])
    assert res.exit_code == 0, res.output
    locks = pl.read_csv(res.stdout.encode())
    assert locks["lock"].to_list() == [f"{LOCK:#x}"] and locks["n_contended"].to_list() == [1]
    res = runner.invoke(app, ["analyze", str(src), "--csv", "-", "--table", "incidents"])
    assert pl.read_csv(res.stdout.encode())["ran_instead"].to_list() == ["vm0/2"]


def test_lock_ids_are_hex_in_csv_tables(tmp_path):
    src = _file(tmp_path, LHP_ROWS)
    res = runner.invoke(app, ["analyze", str(src), "--out-dir", str(tmp_path / "t"), "--csv", "-q"])
    assert res.exit_code == 0, res.output
    for name in ("waits", "waste_by_lock", "lhp_incidents", "incidents"):
        assert pl.read_csv(tmp_path / "t" / f"{name}.csv")["lock"].to_list()[0] == f"{LOCK:#x}"


def test_piped_output_is_not_cut_to_80_columns(tmp_path):
    src = _file(tmp_path, LHP_ROWS)
    res = runner.invoke(app, ["analyze", str(src)])
    assert max(len(x) for x in res.stdout.splitlines()) > 100  # the incident table, unwrapped
    assert f"{LOCK:#x}" in res.stdout and "0xfff…" not in res.stdout
    narrow = runner.invoke(app, ["analyze", str(src), "--width", "60"])
    rows = [x for x in narrow.stdout.splitlines() if x[:1] in "│┃┏┗┡└"]
    assert narrow.exit_code == 0 and rows and max(len(x) for x in rows) <= 60


def test_filters_window_vm_vcpu_lock(tmp_path):
    rows = [
        *LHP_ROWS,
        contend(3, SECOND + 60000, lock=7),
        acquire(3, SECOND + 61000, lock=7),
        release(3, SECOND + 62000, lock=7),
    ]
    src = _file(tmp_path, rows)

    def js(*args):
        res = runner.invoke(app, ["analyze", str(src), "--json", "-", *args])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    assert js()["totals"]["n_contended"] == 2
    assert js("--lock", f"{LOCK:#x}")["totals"]["n_contended"] == 1
    assert js("--lock", "7")["totals"]["n_contended"] == 1
    # trace timestamps as printed: seconds
    only_late = js("--window", "1.000055:")
    assert only_late["totals"]["n_contended"] == 1 and only_late["t_start"] == SECOND + 55_000
    assert js("--window", ":1.000055")["totals"]["n_lhp"] == 1
    assert js("--vm", "vm0")["totals"]["n_contended"] == 2
    res = runner.invoke(app, ["analyze", str(src), "--vm", "nope"])
    assert res.exit_code != 0 and "--vm" in res.output and res.output.count("\n") == 1
    res = runner.invoke(app, ["analyze", str(src), "--csv", "-", "--table", "waits", "--vcpu", "3"])
    assert pl.read_csv(res.stdout.encode())["vcpu"].to_list() == [3]
    res = runner.invoke(app, ["analyze", str(src), "--window", "soon:later"])
    assert res.exit_code == 2 and "--window" in res.output
    # the summary says it is filtered right under its first line, before any number (it said so last)
    res = runner.invoke(app, ["analyze", str(src), "--lock", "7"])
    assert res.stdout.splitlines()[1] == "filtered: lock 0x00000007", res.stdout
    # an id typed in decimal, as the Parquet tables hold it, is pointed at its hex form
    res = runner.invoke(app, ["analyze", str(src), "--lock", str(LOCK)])
    assert res.exit_code == 2 and f"pass --lock {LOCK:#010x}" in res.output, res.output


def test_incident_context_in_memory_matches_parquet(tmp_path):
    trace = trace_of(LHP_ROWS, t_end=LHP_ROWS[-1][0] + 1_000)
    inc = analyze(trace).table("incidents")
    assert inc.select("kind", "vcpu", "pcpu", "ran_instead").rows() == [("LHP", 0, 0, "vm0/2")]


HOST_NO_VM = """# tracer: nop
          <idle>-0       [000] d..2.   100.000100: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 \
prev_state=R ==> next_comm=bash next_pid=42 next_prio=120
            bash-42      [000] d..2.   100.000300: sched_switch: prev_comm=bash prev_pid=42 prev_prio=120 \
prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
"""


def test_a_host_capture_with_no_vm_is_read_as_host_by_its_record_json(tmp_path):
    from pvtrace.ingest.load import load

    (tmp_path / "h.txt").write_text(HOST_NO_VM)
    (tmp_path / "h.record.json").write_text(json.dumps({"mode": "host", "events": []}))
    trace = load([tmp_path / "h.txt"])
    assert trace.meta.vms == {} and trace.meta.extra["side"] == "host"
    assert trace.events["vm"].drop_nulls().len() == 0  # no guest VM named "h"
    # analyze said 'level none, 0 CPUs' and to record the host: what it was recorded with
    res = runner.invoke(app, ["analyze", str(tmp_path / "h.txt")])
    assert res.exit_code == 0 and "warning: a host trace with no VM in it" in res.stderr, res.output
    assert "level none," in res.stdout and ", no vCPU, 0 locks" in res.stdout  # not '0 CPUs'


def test_waits_that_never_end_are_not_summed_as_wait(tmp_path):
    """A trace whose waits begin and never end (perf lock contention events without their ends):
    no wait length is invented (the old code summed each open wait to the trace end) and a warning
    says why the lengths are missing."""
    rows = [contend(0, 10), contend(1, 20), acquire(2, 30), contend(0, 40)]
    src = _file(tmp_path, rows, t_end=1_000_000)
    res = runner.invoke(app, ["analyze", str(src), "--json", "-"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (
        got["totals"]["n_contended"] == 3 and got["wait_ns"] is None
    )  # each begin is one contention; no length
    assert any("no lock wait ends" in w for w in got["warnings"])


def test_harmful_lhp_incidents_are_shown_when_all_incidents_cannot_be(tmp_path):
    """Without every acquisition only harmful LHP incidents are known: the headline shows them
    instead of dropping the row while the incident table lists them."""
    from pvtrace.analyze.result import Analysis
    from pvtrace.cli.summary_view import headline_rows
    from pvtrace.summary import Summary

    s = Summary(totals={"n_lhp_harmful": 15, "waste_lhp_ns": 5}, fidelity={"n_lhp_harmful": "inferred"})
    rows = headline_rows(Analysis(summary=s, tables={}))
    assert ("harmful LHP incidents", "15", "inferred") in rows


def test_a_wait_below_the_resolution_is_never_0_ns():
    """Finding s8-15: a real trace-cmd lock showed `0 ns │ < 1 µs`; a perf run (guest clock moved
    by an offset, so timestamps are no longer whole µs) `0 ns │ 0 ns │ 0 ns`."""
    shifted = pl.DataFrame({"start": [1_000_337, 5_000_337], "end": [1_000_337, 7_000_337]})
    assert clock_tick(shifted) == 1000  # lengths are whole µs though the ends are not
    assert clock_tick(pl.DataFrame({"start": [0], "end": [420]})) == 1
    assert [fmt_wait(ns, 1000) for ns in (0, 400, 2_000)] == ["< 1 µs", "< 1 µs", "2 µs"]
    assert (fmt_wait(0), fmt_wait(420), fmt_wait(None)) == ("< 1 µs", "420 ns", "-")


def _stacked_waits(cost_ns: int) -> list[tuple]:
    """Guest waits on one lock, each with the stack its contention_begin triggered cost_ns later."""
    stack = {
        "event": "kernel_stack",
        "args": "<stack trace>\n=> queued_spin_lock_slowpath\n=> contention_begin",
    }
    rows: list[tuple] = []
    for i in range(5):
        t = 10_000 * (i + 1)
        rows += [contend(1, t), (t + cost_ns, "other", 1, stack), acquire(1, t + cost_ns + 2_000)]
    return rows


@pytest.mark.parametrize(("cost_ns", "warned"), [(4_000, True), (200, False)])
def test_waits_that_include_the_cost_of_a_stack_trace_say_so(cost_ns, warned):
    # a new user's `record --guest` (stacks on by default) read p50 waits of 15-23 us, 15 us of it
    # the stack capture's, with no word of it in analyze
    a = analyze(trace_of(_stacked_waits(cost_ns), t_end=100_000, view="guest"))
    assert a.summary.extra["stack_cost"] == {"median_ns": cost_ns, "n_waits": 5}
    says = [w for w in a.summary.extra.get("warnings", []) if "stack trace" in w]
    assert bool(says) == warned
    if warned:
        assert f"{cost_ns / 1000:.1f} us (median over 5 waits)" in says[0]
    # and the total wait is flagged (new-user audit: 34.7 ms "exact", ~29 ms of it capture), not the count
    parts = a.summary.extra["partial"].get("wait_ns") or []
    assert bool([q for q in parts if "stack capture" in q["missing"]]) == warned
    assert "n_contended" not in a.summary.extra["partial"]


def test_a_real_capture_with_stacks_says_what_they_add_to_its_waits(real_traces):
    trace = real_traces / "local" / "guest-pvqspinlock-mix-stacktrace-ftrace.txt.xz"
    res = runner.invoke(app, ["analyze", str(trace), "--json", "-", "-q"])
    cost = json.loads(res.stdout)["stack_cost"]
    assert cost["n_waits"] > 9_000 and cost["median_ns"] >= 1_000
    assert "includes the stack trace its contention_begin triggered" in res.stderr


@pytest.mark.parametrize(
    ("rows", "view", "wait_ns"),
    [
        ([contend(0, 10), acquire(0, 30), contend(1, 40), acquire(1, 45)], "guest", 25),  # ended waits
        ([acquire(0, 10), release(0, 20), acquire(1, 30), release(1, 40)], "guest", 0),  # none began
        ([contend(0, 10), contend(1, 20)], "guest", None),  # waits that never end have no length
        ([run(0, 0), preempt(0, 10), run(0, 20)], "host", None),  # no lock events: nothing measured
    ],
    ids=["ended", "uncontended", "never-ending", "host-only"],
)
def test_total_wait_is_the_ended_waits_a_true_0_or_null(rows, view, wait_ns):
    """wait_ns has one definition (analyze.summary.total_wait): it was null in the summary's context
    and then made 0 in analyze.run.finish."""
    assert analyze(trace_of(rows, t_end=100, view=view)).summary.extra["wait_ns"] == wait_ns


def test_a_window_in_a_guests_own_clock_names_the_host_window():
    """A merged trace's incidents print both clocks (`0.0444 (vm1 15.0444)`); a user who gave
    --window in the guest's time got only 'outside the trace'."""
    from pvtrace.analyze.filters import filter_trace, parse_filters
    from pvtrace.errors import UsageError
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset
    from pvtrace.simulate.views import select_view

    s = load_preset("lhp-demo").replace(run={"duration_ns": 20_000_000})
    trace = select_view(simulate_trace(s, seed=1)[0], "merged")
    off = trace.meta.clock["guest_offset_ns"]["vm1"]  # host = guest + offset
    guest = -off + 5_000_000  # 5 ms into the trace, read on vm1's clock
    f = parse_filters(f"{guest / 1e9:.6f}:{(guest + 1_000_000) / 1e9:.6f}", None, None, None)
    with pytest.raises(
        UsageError, match=r"takes host-clock times: read on vm1's own clock, it is 0\.00500"
    ) as e:
        filter_trace(trace, f)
    assert "outside the trace" in str(e.value)


def test_says_which_files_it_wrote(tmp_path):
    # it said 'wrote 16 file(s)'
    src = _file(tmp_path, LHP_ROWS)
    js, tables = tmp_path / "s.json", tmp_path / "tables"
    res = runner.invoke(app, ["analyze", str(src), "--json", str(js), "--out-dir", str(tables)])
    assert res.exit_code == 0, res.output
    n = len(list(tables.iterdir()))
    assert f"wrote {n} files in {tables}/, {js}\n" in res.stderr


def test_an_unknown_csv_table_is_refused_before_the_analysis(tmp_path):
    # it was refused after reading and analyzing the whole trace; a file that is no trace shows
    # which check comes first
    res = runner.invoke(app, ["analyze", str(REPO / "README.md"), "--csv", "-", "--table", "nope"])
    assert res.exit_code == 2 and "--table: no table 'nope' (one of locks, " in res.output, res.output
    src = _file(tmp_path, LHP_ROWS)  # a table no input of this trace carries: said after it
    res = runner.invoke(app, ["analyze", str(src), "--csv", "-", "--table", "perf_kvm_stat"])
    assert res.exit_code == 2 and "this trace has no table 'perf_kvm_stat'" in res.output


def test_a_host_trace_of_vcpu_threads_without_state_events_says_so(real_traces):
    """kvm_msr lines from five `CPU n/KVM` threads: the vCPUs are known, their states are not; the
    summary said only 'level none ... 5 CPUs' (new-user audit)."""
    path = real_traces / "public" / "ftrace-7flag_kvm-host-vcpu-threads-kvm_msr_qemu-devel-2025-06-09.txt"
    res = runner.invoke(app, ["analyze", str(path)])
    assert res.exit_code == 0, res.output
    assert "names 5 vCPU thread(s) but has none of the events that give their states" in res.stderr
