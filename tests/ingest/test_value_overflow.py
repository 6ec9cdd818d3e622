"""Numbers too large for their column (CPU ids and pids past int32, timestamps past int64 ns) are
counted problems naming the line, in ftrace, trace-cmd report and perf script text; never a null
that passes for a field the line did not print, and fatal with --strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvtrace.errors import FormatError
from pvtrace.ingest.load import load

N = 40  # records per hand-built trace
BAD_LINE = 21  # the record (1-based, counting records only) that gets the bad value

# One record per format: {cpu} {tid} {ts} are filled in; the event alternates between two vCPU exits.
LINES = {
    "ftrace": "      CPU 0/KVM-{tid}    [{cpu}] d....   {ts}: kvm_exit: vcpu 0 reason HLT rip 0x1 info1 0x0 "
    "info2 0x0 intr_info 0x0 error_code 0x0",
    "trace-cmd": "      CPU 0/KVM-{tid}  [{cpu}]  {ts}: kvm_exit:             vcpu 0 reason HLT rip 0x1 "
    "info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0",
    "perf": "       CPU 0/KVM {tid} [{cpu}] {ts}: kvm:kvm_exit: vcpu 0 reason HLT rip 0x1 info1 0x0 info2 0x0 "
    "intr_info 0x0 error_code 0x0",
}
HEADERS = {"ftrace": "# tracer: nop\n#\n", "trace-cmd": "cpus=2\n", "perf": ""}
CASES = {  # field -> (bad value, problem kind)
    "cpu": ("4294967296", "cpu_out_of_range"),
    "tid": ("99999999999", "pid_out_of_range"),
    "ts": ("99999999999999.999999", "timestamp_out_of_range"),
    "ts_raw": ("99999999999999999999", "timestamp_out_of_range"),  # a counter clock past int64
}


def _trace(fmt: str, bad: dict[int, dict[str, str]], ts_width: int = 3) -> str:
    rows = []
    for i in range(1, N + 1):
        fields = {"cpu": "000", "tid": "1001", "ts": f"{100 + i:0{ts_width}d}.{i:06d}"}
        fields.update(bad.get(i, {}))
        rows.append(LINES[fmt].format(**fields) + "\n")
    return HEADERS[fmt] + "".join(rows)


def _write(tmp_path: Path, fmt: str, text: str) -> Path:
    path = tmp_path / f"t-{fmt}.txt"
    path.write_text(text)
    return path


def _problems(path: Path, fmt: str) -> dict:
    trace = load([path], format=fmt)
    return next(iter(trace.meta.problems.values()), {})


@pytest.mark.parametrize("fmt", sorted(LINES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_number_past_its_column_is_a_counted_problem(tmp_path, fmt, case):
    value, kind = CASES[case]
    field = "ts" if case.startswith("ts") else case
    path = _write(tmp_path, fmt, _trace(fmt, {BAD_LINE: {field: value}}))
    bad_line = BAD_LINE + HEADERS[fmt].count("\n")
    problems = _problems(path, fmt)
    assert {k: v["count"] for k, v in problems.items()} == {kind: 1}
    assert problems[kind]["samples"][0]["line"] == bad_line
    assert value in problems[kind]["samples"][0]["text"]
    trace = load([path], format=fmt)
    assert trace.events["ts"].max() < 10**12  # the wrapped value of an overflow is nowhere
    with pytest.raises(FormatError, match=f":{bad_line}"):
        load([path], format=fmt, strict=True)


@pytest.mark.parametrize("fmt", sorted(LINES))
def test_wide_timestamps_learnt_as_the_layout_still_overflow(tmp_path, fmt):
    # every line has 13-digit seconds (the fixed-column fast path learns that width): all overflow
    bad = {i: {"ts": f"{9_999_999_999_000 + i}.{i:06d}"} for i in range(1, N + 1)}
    path = _write(tmp_path, fmt, _trace(fmt, bad))
    problems = _problems(path, fmt)
    assert {k: v["count"] for k, v in problems.items()} == {"timestamp_out_of_range": N}


def test_a_lost_marker_on_a_cpu_past_int32_is_counted(tmp_path):
    text = _trace("ftrace", {})
    lines = text.splitlines(keepends=True)
    lines.insert(10, "CPU:4294967296 [LOST 12 EVENTS]\n")
    path = _write(tmp_path, "ftrace", "".join(lines))
    assert {k: v["count"] for k, v in _problems(path, "ftrace").items()} == {"cpu_out_of_range": 1}


def test_the_largest_valid_values_are_no_problem(tmp_path):
    bad = {BAD_LINE: {"cpu": "8191", "tid": "4194304"}}
    path = _write(tmp_path, "ftrace", _trace("ftrace", bad))
    assert _problems(path, "ftrace") == {}


@pytest.mark.parametrize("bad_line", [1, BAD_LINE])
def test_a_longer_timestamp_behind_a_source_prefix_is_not_cut_to_a_wrong_one(tmp_path, bad_line):
    # trace-cmd's `name: ` prefix holds the line's first `: `, which stays put when a wider timestamp
    # shifts the rest: the fixed columns read 10^14 s as 1,000 s, a silent wrong start of the trace
    # (the first record of its CPU: nothing before it to go backwards from)
    text = _trace("trace-cmd", {bad_line: {"ts": "100000000000000.000001"}})
    lines = text.splitlines(keepends=True)
    text = lines[0] + "".join("pvlab:" + line for line in lines[1:])
    path = _write(tmp_path, "trace-cmd", text)
    problems = _problems(path, "trace-cmd")
    assert {k: v["count"] for k, v in problems.items()} == {"timestamp_out_of_range": 1}
    assert load([path], format="trace-cmd").events["ts"].min() >= 101 * 10**9
