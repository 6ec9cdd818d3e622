"""`pvtrace record` end to end on the fake host tracefs: options, summary, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_kernel import HOST_EVENTS, HOST_LINES, FakeKernel, ftrace_text, stats_text
from typer.testing import CliRunner

from pvtrace.cli import common
from pvtrace.cli import record as record_cli
from pvtrace.cli.app import app
from pvtrace.cli.record import command_status

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep rich tables on one line per row, so phrases can be found."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch, host_kernel: FakeKernel) -> FakeKernel:
    """Route --tracefs-root to the fake kernel (whose mkdir builds instances)."""
    monkeypatch.setattr(record_cli, "Tracefs", lambda root: host_kernel.tracefs())
    return host_kernel


def _run(args: list[str]):
    return runner.invoke(app, ["record", *args])


def test_host_record_prints_the_summary(
    tmp_path: Path, use_fake: FakeKernel, host_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a console wide enough that no table cell wraps, whatever the length of the temporary paths
    # it prints (a pytest-xdist worker's are longer): the checks below read cells whole
    monkeypatch.setattr(common.out, "_width", 250)
    out = tmp_path / "h.txt"
    res = _run(
        [
            "--host",
            "-o",
            str(out),
            "--duration",
            "0.01",
            "--tracefs-root",
            str(use_fake.root),
            "--proc-root",
            str(host_proc),
        ]
    )
    assert res.exit_code == 0, res.output
    assert "Recorded a host trace" in res.output
    assert "kvm:kvm_exit" in res.output and "Lost events: none" in res.output
    assert "vCPU threads mapped: 3" in res.output
    assert "exit reasons and time in exits" in res.output
    assert out.read_text() == ftrace_text(HOST_LINES)
    assert use_fake.instances() == []


def test_lost_events_summary_suggests_a_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_proc: Path
) -> None:
    kernel = FakeKernel(
        tmp_path / "tracefs",
        HOST_EVENTS,
        trace=ftrace_text(HOST_LINES),
        stats={0: stats_text(entries=100, overrun=100)},
    )
    monkeypatch.setattr(record_cli, "Tracefs", lambda root: kernel.tracefs())
    res = _run(
        [
            "--host",
            "-o",
            str(tmp_path / "h.txt"),
            "--duration",
            "0.01",
            "--buffer-kb",
            "1024",
            "--tracefs-root",
            "x",
            "--proc-root",
            str(host_proc),
        ]
    )
    assert res.exit_code == 0, res.output
    assert "Lost events: 100" in res.output
    assert "--buffer-kb 4096" in res.output


def test_guest_or_host_must_be_chosen(tmp_path: Path) -> None:
    res = _run(["-o", str(tmp_path / "x.txt"), "--duration", "1"])
    assert res.exit_code == 2
    assert "--guest" in res.output and "Traceback" not in res.output
    res = _run(["--guest", "--host", "--duration", "1"])
    assert res.exit_code == 2


def test_preflight_error_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host_proc: Path
) -> None:
    kernel = FakeKernel(tmp_path / "tracefs", ["sched:sched_switch"])
    monkeypatch.setattr(record_cli, "Tracefs", lambda root: kernel.tracefs())
    res = _run(
        [
            "--host",
            "-o",
            str(tmp_path / "h.txt"),
            "--duration",
            "0.01",
            "--tracefs-root",
            "x",
            "--proc-root",
            str(host_proc),
        ]
    )
    assert res.exit_code == 1
    assert "cannot record" in res.output and "modprobe" in res.output
    assert "Traceback" not in res.output
    assert kernel.instances_made == []
    assert not (tmp_path / "h.txt").exists()


def test_existing_output_needs_force(tmp_path: Path, use_fake: FakeKernel, host_proc: Path) -> None:
    out = tmp_path / "h.txt"
    out.write_text("mine")
    args = [
        "--host",
        "-o",
        str(out),
        "--duration",
        "0.01",
        "--tracefs-root",
        "x",
        "--proc-root",
        str(host_proc),
    ]
    res = _run(args)
    assert res.exit_code == 1 and "--force" in res.output
    assert out.read_text() == "mine"
    assert _run([*args, "--force", "-q"]).exit_code == 0
    assert out.read_text() == ftrace_text(HOST_LINES)


def test_a_trace_dat_is_written_only_with_dat(
    tmp_path: Path, use_fake: FakeKernel, host_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """record wrote an unasked trace.dat of about 10 MB next to -o whenever trace-cmd was
    installed (session 10's new user); now only --dat asks for one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trace-cmd").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "trace-cmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    common_args = ["--host", "--duration", "0.01", "--tracefs-root", str(use_fake.root)]
    common_args += ["--proc-root", str(host_proc)]
    plain, asked = tmp_path / "plain", tmp_path / "asked"
    res = _run([*common_args, "-o", str(plain / "h.txt")])
    assert res.exit_code == 0, res.output
    assert "trace.dat" not in res.output
    assert sorted(p.name for p in plain.iterdir()) == ["h.record.json", "h.txt", "h.txt.vcpus.csv"]
    res = _run([*common_args, "-o", str(asked / "h.txt"), "--dat"])
    assert res.exit_code == 0, res.output
    # the fake tracefs is no system tracefs: trace-cmd cannot read it, and the note says so
    assert "no trace.dat: trace-cmd reads only the system tracefs" in res.output


@pytest.mark.parametrize("flag", ["--ticks", "--no-ticks"])
def test_ticks_are_a_guest_option(tmp_path: Path, flag: str) -> None:
    """--no-ticks with --host was dropped in silence (a host records no guest ticks); it is refused
    like --stacktrace, before anything is recorded."""
    out = tmp_path / "h.txt"
    res = _run(["--host", flag, "-o", str(out), "--duration", "0.01"])
    assert res.exit_code == 2 and "--ticks/--no-ticks is a guest option" in res.output, res.output
    assert not out.exists()


def test_a_command_ended_by_a_signal_is_named_by_it():
    """Ctrl-C on a capture with a command printed 'command exit status -2' (new-user audit)."""
    assert command_status(-2) == ", command ended by SIGINT"
    assert command_status(3) == ", command exit status 3" and command_status(None) == ""
