"""Format detection by content: every real file is recognised, anything else is refused with reasons."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pvtrace.errors import FormatError
from pvtrace.ingest.compressed import open_input
from pvtrace.ingest.sniff import NEED_MORE, NO, YES, detect_format, sniff

FTRACE_LINE = (
    b"         contend-7       [002] d..2.  5021.119000: contention_begin: 00000000deadbeef (flags=SPIN)\n"
)


def _expected_public(name: str) -> str:
    for prefix, fmt in (
        ("ftrace", "ftrace"),
        ("abbreviated", "ftrace"),
        ("kvm_halt_poll_ns", "ftrace"),
        ("tracecmd", "trace-cmd"),
        ("perf-script", "perf-script"),
        ("perf-kvm-stat", "perf-kvm-stat"),
        ("perf-lock-contention", "perf-lock-contention"),
    ):
        if name.startswith(prefix):
            return fmt
    raise AssertionError(name)


def _head(path: Path) -> tuple[bytes, bool]:
    stream, _, raw = open_input(path)
    with stream, raw:
        head = stream.read(1 << 20)
        return head, len(head) < (1 << 20)


def test_public_files_are_recognised(real_traces: Path) -> None:
    files = [p for p in (real_traces / "public").iterdir() if p.suffix == ".txt"]
    assert len(files) >= 30
    for path in files:
        head, eof = _head(path)
        assert detect_format(head, eof, str(path)).format == _expected_public(path.name), path.name


def test_local_files_are_recognised(real_traces: Path) -> None:
    caps = json.loads((real_traces / "local" / "captures.json").read_text())["captures"]
    want = {"ftrace": "ftrace", "ftrace (trace_pipe stream)": "ftrace", "trace-cmd report": "trace-cmd"}
    want["perf script"] = "perf-script"
    for cap in caps:
        head, eof = _head(real_traces / "local" / cap["file"])
        assert detect_format(head, eof, cap["file"]).format == want[cap["format"]], cap["file"]
        if "dat" in cap:
            head, eof = _head(real_traces / "local" / cap["dat"])
            assert detect_format(head, eof, cap["dat"]).format == "dat"


def test_multi_input_prefixes_are_detected(real_traces: Path) -> None:
    path = real_traces / "public" / "tracecmd3.1.6-report_two-inputs-prefixed_ts-offset_trappy-dat.txt"
    v = detect_format(path.read_bytes(), True, str(path))
    assert v.format == "trace-cmd" and v.options.has_source
    v = detect_format(FTRACE_LINE * 10, True, "x")
    assert v.format == "ftrace" and not v.options.has_source


def test_console_dump_prefixes_are_detected(real_traces: Path) -> None:
    path = real_traces / "public" / "ftrace-dump-latency-fmt_kvm-guest-rcutorture_linux-next-2024-10-08.txt"
    v = detect_format(path.read_bytes(), True, str(path))
    assert v.format == "ftrace" and v.options.printk_prefix and "printk" in v.reason


def test_unknown_text_lists_every_format_and_why() -> None:
    text = b"Dear list,\nplease find my numbers below.\nThanks\n"
    with pytest.raises(FormatError) as exc:
        detect_format(text, True, "mail.txt")
    msg = str(exc.value)
    assert msg.startswith("mail.txt: not a trace pvtrace can read")
    for fmt in (
        "parquet",
        "dat",
        "ftrace",
        "trace-cmd",
        "perf-script",
        "perf-kvm-stat",
        "perf-lock-contention",
    ):
        assert f"{fmt}: " in msg
    assert "0 of 3 lines" in msg and "'Dear list,'" in msg


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes(range(256)) * 20, "binary data, not text"),
        (b"PERFILE2" + b"\0" * 100, "perf script -i FILE"),
        (b"", "empty file"),
    ],
)
def test_binary_and_empty_inputs(data: bytes, why: str) -> None:
    verdicts = sniff(data, True)
    assert all(v.answer == NO for v in verdicts)
    assert any(why in v.reason for v in verdicts)
    with pytest.raises(FormatError, match="not a trace") as err:
        detect_format(data, True, "x")
    if why != "perf script -i FILE":  # said once, not once per format tried (seven times)
        assert str(err.value).count(why) == 1 and "Tried" not in str(err.value)


def test_magics() -> None:
    assert detect_format(b"PAR1....", False, "x").format == "parquet"
    assert detect_format(b"\x17\x08\x44tracing7\x00", False, "x").format == "dat"


def test_need_more_until_enough_lines_or_the_end() -> None:
    head = FTRACE_LINE * 2
    verdict = {v.format: v for v in sniff(head, eof=False)}["ftrace"]
    assert verdict.answer == NEED_MORE
    verdict = {v.format: v for v in sniff(head, eof=True)}["ftrace"]
    assert verdict.answer == YES


def test_forced_format_that_does_not_fit_is_refused() -> None:
    with pytest.raises(FormatError, match="is not perf-script text"):
        detect_format(FTRACE_LINE * 10, True, "x", "perf-script")
    with pytest.raises(FormatError, match="unknown format"):
        detect_format(FTRACE_LINE * 10, True, "x", "csv")


def test_compressed_head_is_sniffed_after_decompression(tmp_path: Path) -> None:
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(FTRACE_LINE * 10))
    head, eof = _head(path)
    assert detect_format(head, eof, str(path)).format == "ftrace"
