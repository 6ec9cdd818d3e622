"""Value sanity (pvtrace.ingest.sanity): record mutations of a trace either leave every metric as it
was or are reported (a counted problem, an excluded span, or a --strict error); never silent."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import HOWS, data_lines, mutate, problem_count

from pvtrace.analyze import analyze
from pvtrace.errors import FormatError
from pvtrace.ingest.load import load

REPO = Path(__file__).resolve().parents[2]
SCENARIO = """\
[host]
pcpus = 2
[vm]
count = 1
vcpus = 3
locks = 1
compute_ns = 20_000
hold_ns = 2_000
[lock]
algorithm = "ticket"
[run]
seed = 5
duration_ns = 15_000_000
"""


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sanity")
    (d / "s.toml").write_text(SCENARIO)
    subprocess.run(
        [sys.executable, "-m", "pvtrace", "generate", "s.toml", "-o", "t.txt", "--format", "ftrace", "-q"],
        cwd=d,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    return d


@cache
def _lines(path: str) -> tuple[str, ...]:
    return tuple(Path(path).read_text().splitlines(keepends=True))


def _outcome(files: list[Path], strict: bool = False):
    trace = load(files, strict=strict)
    a = analyze(trace)
    problems = problem_count(trace.meta.problems)
    return a.summary.totals, problems, a.table("lost_windows").height


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["t.txt", "t-vm0.txt"]),
    pick=st.integers(0, 10**6),
    how=st.sampled_from(HOWS),
    amount=st.integers(0, 500_000),
)
def test_a_mutated_record_changes_no_metric_or_is_reported(
    trace_dir, tmp_path_factory, which, pick, how, amount
):
    files = [trace_dir / "t.txt", trace_dir / "t-vm0.txt"]
    base_totals, base_problems, base_lost = _outcome(files)
    lines = list(_lines(str(trace_dir / which)))
    data = data_lines(lines)
    i = data[pick % len(data)]
    mutated = mutate(lines, i, how, amount)
    d = tmp_path_factory.mktemp("m")
    for f in files:
        (d / f.name).write_text("".join(mutated) if f.name == which else f.read_text())
    for side in ("t.txt.vcpus.csv", "t.txt.guest-offsets.csv"):  # the side files generate wrote
        if (trace_dir / side).exists():
            (d / side).write_text((trace_dir / side).read_text())
    new = [d / f.name for f in files]
    totals, problems, lost = _outcome(new)
    reported = problems > base_problems or lost > base_lost
    assert totals == base_totals or reported, (how, which, i)
    if reported and problems > base_problems:
        with pytest.raises(FormatError):
            _outcome(new, strict=True)


@pytest.mark.parametrize(
    ("how", "kind"),
    [
        ("back", "time_backwards"),
        ("jump", "time_jump"),
        ("spike", "time_spike"),
        ("cpu", "cpu_out_of_range"),
        ("duplicate", "duplicate_record"),
        ("cpu_int32", "cpu_out_of_range"),
        ("pid_int32", "pid_out_of_range"),
        ("ts_int64", "timestamp_out_of_range"),
    ],
)
def test_each_broken_value_is_one_counted_problem(trace_dir, tmp_path, how, kind):
    lines = list(_lines(str(trace_dir / "t.txt")))
    data = data_lines(lines)
    i = data[len(data) // 2]
    (tmp_path / "t.txt").write_text("".join(mutate(lines, i, how, 1000)))
    (tmp_path / "t.txt.vcpus.csv").write_text((trace_dir / "t.txt.vcpus.csv").read_text())
    trace = load([tmp_path / "t.txt"])
    problems = next(iter(trace.meta.problems.values()))
    assert {k: v["count"] for k, v in problems.items()} == {kind: 1}
    windows = analyze(trace).table("lost_windows").height
    assert windows == (
        1 if how in ("back", "jump", "spike") else 0
    )  # a broken time is excluded like lost events
    if how == "spike":  # the garbled line is the one named, and the trace keeps its span
        assert problems[kind]["samples"][0]["line"] == i + 1
        assert trace.meta.extra["ts_max"] < 10**9


def test_a_garbled_time_on_a_sparse_cpu_is_blamed_on_its_own_line(tmp_path):
    """One digit of a record's time changed (1.002000 -> 1.008000) where its CPU's records are a
    millisecond apart: the records after it go on from the one before it, so it is the broken one
    (new-user audit: the next, correct line was named as going back)."""
    times = ["1.000000", "1.001000", "1.008000", "1.003000", "1.004000", "1.005000"]
    lines = [
        f" t-5 [000] {t}: contention_{'begin' if i % 2 == 0 else 'end'}: 0xffff888100000000"
        f"{' (flags=SPIN)' if i % 2 == 0 else ' (ret=0)'}\n"
        for i, t in enumerate(times)
    ]
    (tmp_path / "g.txt").write_text("".join(lines))
    trace = load([tmp_path / "g.txt"])
    (problems,) = trace.meta.problems.values()
    assert {k: v["count"] for k, v in problems.items()} == {"time_spike": 1}
    assert problems["time_spike"]["samples"][0]["line"] == 3
    assert trace.events["ts"].max() == 1_005_000_000  # the window ends at the last good record
    # a garbled dip (the record after it going on from the one before) still blames the dip
    dip = [*times[:3], "1.000500", *times[4:]]
    dip[2] = "1.002000"
    (tmp_path / "d.txt").write_text(
        "".join(ln.replace(a, b) for ln, a, b in zip(lines, times, dip, strict=True))
    )
    (problems,) = load([tmp_path / "d.txt"]).meta.problems.values()
    assert {k: v["count"] for k, v in problems.items()} == {"time_backwards": 1}
    assert problems["time_backwards"]["samples"][0]["line"] == 4


def test_a_known_event_with_a_garbled_field_is_a_counted_problem_naming_its_line(tmp_path):
    """contention_begin whose lock address is garbled: the event cannot be used, and the line is
    named (new-user audit: only "2 lock events out of sequence", and ingest said "Problems: none")."""
    lines = [
        " t-5 [000] 1.000000: contention_begin: 0xffff888100000000 (flags=SPIN)\n",
        " t-5 [000] 1.000002: contention_end: 0xffff888100000000 (ret=0)\n",
        " t-5 [000] 1.000004: contention_begin: 0xffff8881zz000000 (flags=SPIN)\n",
        " t-5 [000] 1.000006: contention_end: 0xffff888100000000 (ret=0)\n",
    ]
    (tmp_path / "g.txt").write_text("".join(lines))
    (problems,) = load([tmp_path / "g.txt"]).meta.problems.values()
    assert {k: v["count"] for k, v in problems.items()} == {"unreadable_payload": 1}
    (sample,) = problems["unreadable_payload"]["samples"]
    assert sample["line"] == 3 and "0xffff8881zz000000" in sample["text"]
    with pytest.raises(FormatError, match=r"g\.txt.*3.*fields could not be read"):
        load([tmp_path / "g.txt"], strict=True)
    # beside another input (read together): still that file's line
    (tmp_path / "other-vm1.txt").write_text("".join(lines[:2]))
    problems = load([tmp_path / "other-vm1.txt", tmp_path / "g.txt"]).meta.problems
    assert {Path(k).name: {n: v["count"] for n, v in p.items()} for k, p in problems.items()} == {
        "g.txt": {"unreadable_payload": 1}
    }
