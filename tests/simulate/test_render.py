"""Renderers print a run exactly as real kernels and tools do (formats.md), and carry its events.

Golden files under tests/data/render/ are the expected text of a small hand-built
run; re-bless them with PVTRACE_BLESS=1 after an intended change (and read the diff).
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvtrace.errors import OutputExistsError, PvtraceError, UsageError
from pvtrace.ingest.offsets_file import OFFSETS_SUFFIX, read_offsets
from pvtrace.schema import conform_events
from pvtrace.simulate.render import text, to_ftrace, to_perf_script, to_trace_cmd_report, write_rendered
from pvtrace.simulate.render.identities import vcpu_map
from pvtrace.simulate.views import select_view
from pvtrace.trace import Trace, TraceMeta, read_trace


def guest_locks(trace: Trace) -> pl.DataFrame:
    """The lock events of the guest view (without its ticks and steal samples)."""
    return select_view(trace, "guest").events.filter(pl.col("kind") != "other")


DATA = Path(__file__).resolve().parents[1] / "data" / "render"
BLESS = os.environ.get("PVTRACE_BLESS") == "1"


def handbuilt() -> Trace:
    events = pl.read_csv(DATA / "handbuilt-events.csv", schema_overrides={"lock": pl.UInt64})
    return Trace(conform_events(events), TraceMeta.from_json((DATA / "handbuilt-meta.json").read_text()))


def render(fn, trace: Trace, **kwargs) -> str:
    out = io.StringIO()
    fn(trace, out, **kwargs)
    return out.getvalue()


# ---------------------------------------------------------------- line grammars (formats.md)

FTRACE_ANCHOR = re.compile(r"^\s*(.*)-(\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(\d+)\]\s")  # formats.md §1.2
FTRACE_LINE = re.compile(
    r"^(?P<comm>.{16})-(?P<pid>\d+) *\[(?P<cpu>\d{3})\] (?P<flags>[dDbX.][NnpP.][ZzHhs.][0-9a-f.][0-9a-f.]) "
    r"(?P<secs>[ \d]{5,})\.(?P<frac>\d{6}): (?P<event>\w+): (?P<payload>.*)$"
)
TRACE_CMD_LINE = re.compile(
    r"^(?:(?P<source> *[\w.-]+): )?(?P<comm>.{16})-(?P<pid>\d+) *\[(?P<cpu>\d{3})\] "
    r"(?P<secs>[ \d]{5,})\.(?P<frac>\d{6}|\d{9}): (?P<event>\w+):(?P<padded>.*)$"
)
PERF_LINE = re.compile(
    r"^(?P<comm>.{16}) (?P<tid>[ \d]{7}) \[(?P<cpu>\d{3})\] (?P<secs>[ \d]{5,})\.(?P<frac>\d{6}|\d{9}): "
    r"(?P<name> *(?P<system>\w+):(?P<event>\w+)): (?P<payload>.*)$"
)
HEX = r"[0-9a-f]"
KERNEL_PAYLOADS = {
    "sched_switch": r"prev_comm=(?P<prev_comm>.+) prev_pid=(?P<prev_pid>\d+) prev_prio=120 prev_state=(?P<state>R\+|R|S) "
    r"==> next_comm=(?P<next_comm>.+) next_pid=(?P<next_pid>\d+) next_prio=120",
    "sched_waking": r"comm=(?P<woken>.+) pid=(?P<woken_pid>\d+) prio=120 target_cpu=(?P<target>\d{3})",
    "sched_wakeup": r"comm=(?P<woken>.+) pid=(?P<woken_pid>\d+) prio=120 target_cpu=(?P<target>\d{3})",
    "kvm_exit": rf"vcpu (?P<vcpu>\d+) reason (?P<reason>[A-Z_]+) rip 0x{HEX}+ info1 0x{HEX}{{16}} info2 0x{HEX}{{16}} "
    rf"intr_info 0x{HEX}{{8}} error_code 0x{HEX}{{8}} requests 0x{HEX}{{16}}",
    "kvm_entry": rf"vcpu (?P<vcpu>\d+), rip 0x{HEX}+ intr_info 0x{HEX}{{8}} error_code 0x{HEX}{{8}}",
    "kvm_hypercall": rf"nr 0x(?P<nr>{HEX}+) a0 0x(?P<a0>{HEX}+) a1 0x(?P<a1>{HEX}+) a2 0x0 a3 0x0",
    "kvm_vcpu_wakeup": r"wait time (?P<wait>\d+) ns, polling valid",
    "kvm_ple_window_update": r"vcpu (?P<vcpu>\d+) old (?P<old>\d+) new (?P<new>\d+) \((?P<dir>growed|shrinked)\)",
}
PLUGIN_PAYLOADS = {
    **KERNEL_PAYLOADS,
    "sched_switch": r"(?P<prev_comm>.+):(?P<prev_pid>\d+) \[120\] (?P<state>R|S) ==> (?P<next_comm>.+):(?P<next_pid>\d+) \[120\]",
    "sched_wakeup": r"(?P<woken>.+):(?P<woken_pid>\d+) \[120\] CPU:(?P<target>\d{3})",
    "kvm_exit": rf"reason (?P<reason>[A-Z_]+) rip 0x{HEX}+ info 0 0",
    "kvm_entry": rf" vcpu (?P<vcpu>\d+) rip 0x{HEX}+",
}
GUEST_HASHED = r"(?P<lock>0{8}[0-9a-f]{8}) \((?:flags=(?P<flags>[A-Z|]+)|ret=0)\)"
GUEST_ADDRESS = r"0x(?P<lock>[0-9a-f]+) \((?:flags=(?P<flags>[A-Z|]+)|ret=0)\)"


def data_lines(text_: str) -> list[str]:
    return [line for line in text_.splitlines() if not line.startswith("#")]


def parse(text_: str, grammar: re.Pattern, payloads: dict[str, str] | str) -> list[dict]:
    """Every data line must match the grammar and its event's payload form; returns the fields."""
    rows = []
    for line in data_lines(text_):
        m = grammar.match(line)
        assert m, f"line does not match the format: {line!r}"
        row = m.groupdict()
        if "padded" in row:  # trace-cmd: "name:" padded to 21 columns, then a space
            pad = " " * (max(21, len(row["event"]) + 1) - len(row["event"]))
            assert row["padded"].startswith(pad), f"event name not padded to 20 columns: {line!r}"
            row["payload"] = row.pop("padded")[len(pad) :]
        form = payloads if isinstance(payloads, str) else payloads[row["event"]]
        p = re.fullmatch(form, row["payload"])
        assert p, f"{row['event']} body does not match {form!r}: {row['payload']!r}"
        row.update({k: v for k, v in p.groupdict().items() if v is not None})
        row["ts"] = int(row["secs"]) * 10**9 + int(row["frac"]) * 10 ** (9 - len(row["frac"]))
        rows.append(row)
    return rows


# ---------------------------------------------------------------- golden files

GOLDEN = {
    "handbuilt-host.ftrace.txt": (to_ftrace, {"side": "host"}),
    "handbuilt-vm0.ftrace.txt": (to_ftrace, {"side": "guest", "vm": "vm0"}),
    "handbuilt-vm1.ftrace.txt": (to_ftrace, {"side": "guest", "vm": "vm1"}),
    "handbuilt-merged.trace-cmd.txt": (to_trace_cmd_report, {"side": "merged"}),
    "handbuilt-host-us.trace-cmd.txt": (to_trace_cmd_report, {"side": "host", "ns": False}),
    "handbuilt-vm0.trace-cmd.txt": (to_trace_cmd_report, {"side": "guest", "vm": "vm0"}),
    "handbuilt-host.perf.txt": (to_perf_script, {"side": "host"}),
    "handbuilt-vm0.perf.txt": (to_perf_script, {"side": "guest", "vm": "vm0"}),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden(name):
    fn, kwargs = GOLDEN[name]
    got = render(fn, handbuilt(), **kwargs)
    path = DATA / name
    if BLESS:
        path.write_text(got)
    assert path.exists(), f"{path} missing; run with PVTRACE_BLESS=1 to create it"
    assert got == path.read_text(), (
        f"{name} differs from the golden file; re-bless with PVTRACE_BLESS=1 if intended"
    )


# ---------------------------------------------------------------- formats


def test_ftrace_host_header_and_lines():
    trace = handbuilt()
    out = render(to_ftrace, trace)
    lines = out.splitlines()
    assert lines[0] == "# tracer: nop"
    n = len(data_lines(out))
    assert lines[2] == f"# entries-in-buffer/entries-written: {n}/{n}   #P:4"
    assert lines[10] == "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION"
    for line in data_lines(out):
        assert FTRACE_ANCHOR.match(line)
        assert line.index("[") == 25, "comm %16s, '-', pid %-7d, ' ' (kernel >= 5.14)"
    parse(out, FTRACE_LINE, KERNEL_PAYLOADS)


def test_ftrace_host_carries_the_host_events():
    trace = handbuilt()
    events = select_view(trace, "host").events
    rows = parse(render(to_ftrace, trace), FTRACE_LINE, KERNEL_PAYLOADS)
    by_event = Counter(r["event"] for r in rows)
    n = Counter(events["kind"].cast(pl.String).to_list())
    assert by_event["kvm_exit"] == n["vm_exit"]
    assert by_event["kvm_entry"] == n["vm_entry"]
    assert by_event["kvm_hypercall"] == n["pv_kick"] + n["yield_to"]
    assert by_event["kvm_ple_window_update"] == n["ple_window"]
    # Exits: same (ts truncated to us, pCPU, vCPU, reason), in order.
    vmx = {"PAUSE": "PAUSE_INSTRUCTION", "HYPERCALL": "VMCALL"}
    exits = events.filter(pl.col("kind") == "vm_exit")
    assert [
        (r["ts"], int(r["cpu"]), int(r["vcpu"]), r["reason"]) for r in rows if r["event"] == "kvm_exit"
    ] == [
        (ts // 1000 * 1000, pcpu, vcpu, vmx.get(reason, reason))
        for ts, pcpu, vcpu, reason in exits.select(
            "ts", "pcpu", "vcpu", pl.col("reason").cast(pl.String)
        ).rows()
    ]
    # Every vcpu_run is a switch to a vCPU thread, every preempt/halt of a running vCPU one away from it.
    tids = {(r["vm"], r["vcpu"]): r["tid"] for r in vcpu_map(trace).iter_rows(named=True)}
    runs = events.filter(pl.col("kind") == "vcpu_run").select("ts", "pcpu", "vm", "vcpu").rows()
    switches = [r for r in rows if r["event"] == "sched_switch"]
    assert [
        (r["ts"], int(r["cpu"]), int(r["next_pid"])) for r in switches if r["next_comm"].startswith("CPU ")
    ] == [(ts, pcpu, tids[(vm, vcpu)]) for ts, pcpu, vm, vcpu in runs]
    outs = [(r["ts"], r["state"], int(r["prev_pid"])) for r in switches if r["prev_comm"].startswith("CPU ")]
    assert outs == [
        (200_000, "R+", 1001),
        (260_000, "R", 1002),
        (380_000, "S", 1001),
        (520_000, "R", 1001),
        (600_000, "R+", 2001),
        (1_000_000, "S", 1003),
    ]
    # Kicks name the target's APIC id (= vCPU index); the hypercall yield names its target in a0.
    calls = [(r["nr"], r["a0"], r["a1"]) for r in rows if r["event"] == "kvm_hypercall"]
    assert calls == [("5", "0", "0"), ("b", "2", "0")]
    # The halted vCPU's wake-up carries its halt time.
    assert [int(r["wait"]) for r in rows if r["event"] == "kvm_vcpu_wakeup"] == [20_000]


def test_ftrace_guest_uses_guest_clock_and_hashed_pointers():
    trace = handbuilt()
    for vm, offset in trace.meta.clock["guest_offset_ns"].items():
        out = render(to_ftrace, trace, side="guest", vm=vm)
        assert f"#P:{trace.meta.vms[vm].n_vcpus}" in out.splitlines()[2]
        rows = parse(out, FTRACE_LINE, GUEST_HASHED)
        guest = guest_locks(trace).filter(pl.col("vm") == vm)
        assert [(r["ts"], int(r["cpu"]), r["event"]) for r in rows] == [
            (
                (ts - offset) // 1000 * 1000,
                vcpu,
                "contention_begin" if kind == "lock_contend" else "contention_end",
            )
            for ts, vcpu, kind in guest.select("ts", "vcpu", pl.col("kind").cast(pl.String)).rows()
        ]
        # One hashed pointer per lock, distinct locks distinct hashes.
        pairs = {(r["lock"], lock) for r, lock in zip(rows, guest["lock"].to_list(), strict=True)}
        assert len({h for h, _ in pairs}) == len({lock for _, lock in pairs}) == len(pairs)


def test_trace_cmd_merged_layout():
    trace = handbuilt()
    out = render(to_trace_cmd_report, trace)
    lines = out.splitlines()
    assert lines[:3] == ["     host.dat: cpus=4", "trace-vm0.dat: cpus=3", "trace-vm1.dat: cpus=1"]
    host_rows, guest_rows = [], []
    for line in lines[3:]:
        m = TRACE_CMD_LINE.match(line)
        assert m and m["source"] is not None, line
        assert len(m["source"]) == len("trace-vm0.dat"), "prefixes right-aligned to the longest name"
        assert len(m["frac"]) == 9, "-t prints nanoseconds"
    for row in parse(
        "\n".join(lines[3:]),
        TRACE_CMD_LINE,
        {**PLUGIN_PAYLOADS, "contention_begin": GUEST_ADDRESS, "contention_end": GUEST_ADDRESS},
    ):
        (host_rows if row["source"].strip() == "host.dat" else guest_rows).append(row)
    # The plugin loses the + of R+; the host clock is shared and exact to the ns.
    assert {r["state"] for r in host_rows if r["event"] == "sched_switch"} == {"R", "S"}
    guest = guest_locks(trace)
    assert [(r["source"].strip(), r["ts"], int(r["cpu"])) for r in guest_rows] == [
        (f"trace-{vm}.dat", ts, vcpu)
        for vm, ts, vcpu in guest.select(pl.col("vm").cast(pl.String), "ts", "vcpu").rows()
    ]
    assert [int(r["lock"], 16) for r in guest_rows] == guest["lock"].to_list()
    ts = [r["ts"] for r in host_rows + guest_rows]
    assert [r["ts"] for r in parse("\n".join(lines[3:]), TRACE_CMD_LINE, ".*")] == sorted(ts)


def test_trace_cmd_single_inputs_have_no_prefix():
    trace = handbuilt()
    host = render(to_trace_cmd_report, trace, side="host", ns=False)
    assert host.splitlines()[0] == "cpus=4"
    rows = parse("\n".join(host.splitlines()[1:]), TRACE_CMD_LINE, PLUGIN_PAYLOADS)
    assert all(r["source"] is None and len(r["frac"]) == 6 for r in rows)
    guest = render(to_trace_cmd_report, trace, side="guest", vm="vm1")
    assert guest.splitlines()[0] == "cpus=1"
    rows = parse("\n".join(guest.splitlines()[1:]), TRACE_CMD_LINE, GUEST_ADDRESS)
    offset = trace.meta.clock["guest_offset_ns"]["vm1"]
    assert [r["ts"] for r in rows] == [500_000 - offset, 500_001 - offset]


def test_perf_script_layout():
    trace = handbuilt()
    host = render(to_perf_script, trace)
    rows = parse(host, PERF_LINE, KERNEL_PAYLOADS)
    assert {len(r["name"]) for r in rows} == {len("kvm:kvm_ple_window_update")}
    assert {r["system"] for r in rows} == {"sched", "kvm"}
    assert "R+" in {r.get("state") for r in rows}, "perf without plugins keeps R+"
    assert {r["comm"].strip() for r in rows if r["tid"].strip() == "0"} == {"swapper"}
    guest = render(to_perf_script, trace, side="guest", vm="vm0")
    rows = parse(guest, PERF_LINE, GUEST_ADDRESS)
    assert {len(r["name"]) for r in rows} == {len("lock:contention_begin")}
    ns = render(to_perf_script, trace, ns=True)
    assert {len(r["frac"]) for r in parse(ns, PERF_LINE, KERNEL_PAYLOADS)} == {9}


def test_rendering_is_deterministic_and_batch_independent(monkeypatch):
    trace = handbuilt()
    outputs = {name: render(fn, trace, **kw) for name, (fn, kw) in GOLDEN.items()}
    assert outputs == {name: render(fn, trace, **kw) for name, (fn, kw) in GOLDEN.items()}
    monkeypatch.setattr(text, "BATCH_LINES", 3)
    assert outputs == {name: render(fn, trace, **kw) for name, (fn, kw) in GOLDEN.items()}


def test_guest_side_needs_a_vm_when_several():
    with pytest.raises(UsageError, match="say which guest"):
        render(to_ftrace, handbuilt(), side="guest")
    with pytest.raises(UsageError, match="no VM 'vm7'"):
        render(to_ftrace, handbuilt(), side="guest", vm="vm7")
    with pytest.raises(UsageError, match="only for side='guest'"):
        render(to_perf_script, handbuilt(), side="host", vm="vm0")


def test_guest_clock_before_zero_is_an_error():
    trace = handbuilt()
    trace.meta.clock["guest_offset_ns"]["vm1"] = 600_000
    with pytest.raises(PvtraceError, match="before guest time 0"):
        render(to_ftrace, trace, side="guest", vm="vm1")


# ---------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("fmt", "view", "names"),
    [
        ("ftrace", "host", ["run.txt", "run.txt.vcpus.csv"]),
        ("ftrace", "guest", ["run-vm0.txt", "run-vm1.txt"]),
        (
            "ftrace",
            "merged",
            ["run.txt", "run-vm0.txt", "run-vm1.txt", "run.txt.guest-offsets.csv", "run.txt.vcpus.csv"],
        ),
        ("trace-cmd", "host", ["run.txt", "run.txt.vcpus.csv"]),
        ("trace-cmd", "guest", ["run-vm0.txt", "run-vm1.txt"]),
        ("trace-cmd", "merged", ["run.txt", "run.txt.vcpus.csv"]),
        ("perf", "host", ["run.txt", "run.txt.vcpus.csv"]),
        (
            "perf",
            "merged",
            ["run.txt", "run-vm0.txt", "run-vm1.txt", "run.txt.guest-offsets.csv", "run.txt.vcpus.csv"],
        ),
    ],
)
def test_write_rendered_files(tmp_path, fmt, view, names):
    trace = handbuilt()
    paths = write_rendered(trace, fmt, view, tmp_path / "run.txt")
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names), "no partial files left"
    if fmt == "trace-cmd" and view == "merged":
        assert paths[0].read_text() == render(to_trace_cmd_report, trace, side="merged")
    if fmt == "ftrace" and view == "guest":
        assert paths[1].read_text() == render(to_ftrace, select_view(trace, "guest"), side="guest", vm="vm1")
    if view != "guest":
        side = pl.read_csv(paths[-1])
        assert side.columns == ["tid", "pid", "vm", "vcpu"]
        assert side.rows() == [
            (1001, 1000, "vm0", 0),
            (1002, 1000, "vm0", 1),
            (1003, 1000, "vm0", 2),
            (2001, 2000, "vm1", 0),
        ]


def test_merged_text_saves_the_guest_offsets_it_used(tmp_path):
    trace = handbuilt()
    paths = write_rendered(trace, "ftrace", "merged", tmp_path / "run.txt")
    (side,) = [p for p in paths if p.name.endswith(OFFSETS_SUFFIX)]
    assert read_offsets(side) == {vm: int(v) for vm, v in trace.meta.clock["guest_offset_ns"].items()}


def test_write_rendered_parquet_is_the_view(tmp_path):
    trace = handbuilt()
    (path,) = write_rendered(trace, "parquet", "guest", tmp_path / "g.parquet")
    back = read_trace(path)
    assert back.meta.view == "guest"
    assert back.events.equals(select_view(trace, "guest").events)


def test_write_rendered_refuses_to_overwrite(tmp_path):
    trace = handbuilt()
    out = tmp_path / "run.txt"
    write_rendered(trace, "ftrace", "merged", out)
    guest_file = tmp_path / "run-vm1.txt"
    guest_file.write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        write_rendered(trace, "ftrace", "merged", out)
    assert guest_file.read_text() == "mine", "nothing written when any output exists"
    before = out.read_bytes()
    write_rendered(trace, "ftrace", "merged", out, force=True)
    assert out.read_bytes() == before
    assert guest_file.read_text() == render(to_ftrace, trace, side="guest", vm="vm1")


def test_write_rendered_rejects_what_no_tool_prints(tmp_path):
    trace = handbuilt()
    with pytest.raises(UsageError, match="view 'full'"):
        write_rendered(trace, "ftrace", "full", tmp_path / "x.txt")
    with pytest.raises(UsageError, match="microsecond"):
        write_rendered(trace, "ftrace", "host", tmp_path / "x.txt", ns=True)
    with pytest.raises(UsageError, match="unknown format"):
        write_rendered(trace, "systrace", "host", tmp_path / "x.txt")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- printf helpers


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=20))
def test_hex_helpers_match_printf(values):
    frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.UInt64)})
    got = frame.select(text.hex_digits(pl.col("v"), 16).alias("x"), text.hex_lx(pl.col("v")).alias("lx"))
    assert got["x"].to_list() == [f"{v:016x}" for v in values]
    assert got["lx"].to_list() == [f"{v:x}" for v in values]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 10**15), min_size=1, max_size=20))
def test_timestamps_match_printf(values):
    frame = pl.DataFrame({"ts": pl.Series(values, dtype=pl.Int64)})
    got = frame.select(
        text.timestamp(pl.col("ts"), 6).alias("us"), text.timestamp(pl.col("ts"), 9).alias("ns")
    )
    assert got["us"].to_list() == [f"{v // 10**9:5d}.{v % 10**9 // 1000:06d}" for v in values]
    assert got["ns"].to_list() == [f"{v // 10**9:5d}.{v % 10**9:09d}" for v in values]


# ---------------------------------------------------------------- simulator runs

SIM_CASES = {
    "ticket-preemption": {"run": {"duration_ns": 30_000_000}},
    "pv-halt-kick-ple-noise": {
        "lock": {"algorithm": "pv-ticket", "spin_threshold_ns": 2_000},
        "hypervisor": {"ple": True},
        "host": {"noise_tasks": 1},
        "run": {"duration_ns": 40_000_000},
    },
    "yield-to-holder": {
        "cures": {"yield_to_holder": True, "yield_threshold_ns": 1_000},
        "run": {"duration_ns": 20_000_000},
    },
    "preemption-hint": {"cures": {"preemption_hint": True}, "run": {"duration_ns": 20_000_000}},
}


def sim_trace(case: str, seed: int) -> Trace:
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    trace, _ = simulate_trace(load_preset("lhp-demo").replace(**SIM_CASES[case]), seed=seed)
    return trace


def check_cpu_occupancy(rows: list[dict]) -> None:
    """What a real trace always shows: each CPU's switches chain (prev = the previous next), and every
    other line on a CPU is printed by the task running there."""
    current: dict[str, str] = {}
    for r in rows:
        pid = r.get("pid") or r.get("tid")
        if r["event"] == "sched_switch":
            if r["cpu"] in current:
                assert r["prev_pid"] == current[r["cpu"]], f"switch chain broken on CPU {r['cpu']}: {r}"
            assert pid.strip() == r["prev_pid"]
            current[r["cpu"]] = r["next_pid"]
        elif r["cpu"] in current:
            assert pid.strip() == current[r["cpu"]], f"line printed by a task not running there: {r}"


def check_host_rows(trace: Trace, rows: list[dict], exact_ns: bool) -> None:
    events = select_view(trace, "host").events
    n = Counter(events["kind"].cast(pl.String).to_list())
    by_event = Counter(r["event"] for r in rows)
    tids = {(r["vm"], r["vcpu"]): str(r["tid"]) for r in vcpu_map(trace).iter_rows(named=True)}
    trunc = 1 if exact_ns else 1000
    assert by_event["kvm_exit"] == n["vm_exit"]
    assert by_event["kvm_entry"] == n["vm_entry"]
    assert by_event["kvm_hypercall"] == n["pv_kick"] + n["yield_to"]
    assert by_event["kvm_ple_window_update"] == n["ple_window"]
    leaves = events.filter(pl.col("kind").is_in(["vcpu_preempt", "vcpu_halt"]) & pl.col("pcpu").is_not_null())
    declared = events.filter((pl.col("kind") == "vcpu_preempt") & pl.col("pcpu").is_null())
    assert by_event["sched_wakeup"] == by_event["sched_waking"] == n["vcpu_wake"] + declared.height
    switches = [r for r in rows if r["event"] == "sched_switch"]
    ins = [(r["ts"], int(r["cpu"]), r["next_pid"]) for r in switches if r["next_comm"].startswith("CPU ")]
    runs = events.filter(pl.col("kind") == "vcpu_run").select(
        "ts", "pcpu", pl.col("vm").cast(pl.String), "vcpu"
    )
    assert ins == [(ts // trunc * trunc, pcpu, tids[(vm, vcpu)]) for ts, pcpu, vm, vcpu in runs.rows()]
    outs = [(r["ts"], int(r["cpu"]), r["prev_pid"]) for r in switches if r["prev_comm"].startswith("CPU ")]
    assert outs == [
        (ts // trunc * trunc, pcpu, tids[(vm, vcpu)])
        for ts, pcpu, vm, vcpu in leaves.select("ts", "pcpu", pl.col("vm").cast(pl.String), "vcpu").rows()
    ]
    exits = events.filter(pl.col("kind") == "vm_exit").select(
        "ts", "pcpu", pl.col("vm").cast(pl.String), "vcpu"
    )
    assert [
        (r["ts"], int(r["cpu"]), (r.get("pid") or r.get("tid")).strip())
        for r in rows
        if r["event"] == "kvm_exit"
    ] == [(ts // trunc * trunc, pcpu, tids[(vm, vcpu)]) for ts, pcpu, vm, vcpu in exits.rows()]
    check_cpu_occupancy(rows)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", sorted(SIM_CASES))
def test_simulator_runs_render_in_every_format(case, seed, tmp_path):
    trace = sim_trace(case, seed)
    host_ftrace = render(to_ftrace, trace)
    check_host_rows(trace, parse(host_ftrace, FTRACE_LINE, KERNEL_PAYLOADS), exact_ns=False)
    check_host_rows(
        trace, parse(render(to_perf_script, trace, ns=True), PERF_LINE, KERNEL_PAYLOADS), exact_ns=True
    )
    report = render(to_trace_cmd_report, trace).splitlines()
    n_inputs = 1 + len(trace.meta.vms)
    rows = parse(
        "\n".join(report[n_inputs:]),
        TRACE_CMD_LINE,
        {**PLUGIN_PAYLOADS, "contention_begin": GUEST_ADDRESS, "contention_end": GUEST_ADDRESS},
    )
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows), "one timeline, in order"
    host_rows = [r for r in rows if r["source"].strip() == "host.dat"]
    check_host_rows(trace, host_rows, exact_ns=True)
    guest = guest_locks(trace)
    for vm, offset in trace.meta.clock["guest_offset_ns"].items():
        mine = guest.filter(pl.col("vm") == vm).select("ts", "vcpu", "lock").rows()
        ftrace_rows = parse(render(to_ftrace, trace, side="guest", vm=vm), FTRACE_LINE, GUEST_HASHED)
        assert [(r["ts"], int(r["cpu"])) for r in ftrace_rows] == [
            ((ts - offset) // 1000 * 1000, v) for ts, v, _ in mine
        ]
        hashes = {lock: r["lock"] for r, (_, _, lock) in zip(ftrace_rows, mine, strict=True)}
        assert len(set(hashes.values())) == len(hashes)
        perf_rows = parse(render(to_perf_script, trace, side="guest", vm=vm), PERF_LINE, GUEST_ADDRESS)
        assert [(r["ts"], int(r["lock"], 16)) for r in perf_rows] == [
            ((ts - offset) // 1000 * 1000, lock) for ts, _, lock in mine
        ]
        merged = [r for r in rows if r["source"].strip() == f"trace-{vm}.dat"]
        assert [(r["ts"], int(r["cpu"]), int(r["lock"], 16)) for r in merged] == mine
    # Same run, same bytes: the files are a pure function of the run.
    first = write_rendered(trace, "trace-cmd", "merged", tmp_path / "a.txt")
    second = write_rendered(trace, "trace-cmd", "merged", tmp_path / "b.txt")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_side_without_its_events_renders_empty():
    trace = handbuilt()
    guest_only, host_only = select_view(trace, "guest"), select_view(trace, "host")
    assert data_lines(render(to_ftrace, guest_only)) == []
    assert "entries-written: 0/0" in render(to_ftrace, guest_only)
    assert render(to_perf_script, guest_only) == ""
    assert render(to_trace_cmd_report, guest_only, side="host") == "cpus=4\n"
    assert data_lines(render(to_ftrace, host_only, side="guest", vm="vm0")) == []
    # The merged report of a host-only view still lists every guest input.
    assert (
        render(to_trace_cmd_report, host_only).splitlines()[:3]
        == render(to_trace_cmd_report, trace).splitlines()[:3]
    )
