"""Truncated inputs are reported, never silently fine: an archive cut mid-stream (or corrupt) is read
up to the damage and counted (truncated_stream, naming the file; its cut last line is dropped), a
plain input whose last line lacks its newline (maybe cut mid-record) is counted (last_line_cut);
`analyze` says so on the terminal and in the JSON, --strict makes either fatal in one line, and
nothing gives a traceback."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random

import pytest
import zstandard
from faults import run

from pvtrace.analyze import analyze
from pvtrace.errors import FormatError
from pvtrace.ingest.load import load
from pvtrace.report.trace_page import render_report

COMPRESS = {
    "xz": lzma.compress,
    "gz": gzip.compress,
    "zst": lambda d: zstandard.ZstdCompressor().compress(d),
    "bz2": lambda d: bz2.compress(d, 1),  # 100 KB blocks: a cut leaves whole blocks before it
}
NAMES = {"xz": "xz", "gz": "gzip", "zst": "zstd", "bz2": "bzip2"}
N = 8000  # records: about 1 MB, over 100 KB compressed


def _text(n: int = N) -> str:
    rng = random.Random(n)  # rip values that do not compress: the archive spans several decoder chunks
    rows = ["# tracer: nop\n#\n"]
    for i in range(n):
        rip = f"0x{rng.getrandbits(48):012x}"
        event = (
            f"kvm_exit: vcpu 0 reason HLT rip {rip} info1 0x0 info2 0x0 intr_info 0x0 error_code 0x0"
            if i % 2 == 0
            else f"kvm_entry: vcpu 0, rip {rip} intr_info 0x00000000 error_code 0x00000000"
        )
        rows.append(
            f"      CPU 0/KVM-1001    [000] d....   {100 + i // 1000}.{i % 1000:03d}{i % 7:03d}: {event}\n"
        )
    return "".join(rows)


def _counts(trace) -> dict[str, int]:
    kinds = next(iter(trace.meta.problems.values()), {})
    return {k: v["count"] for k, v in kinds.items()}


@pytest.mark.parametrize("ext", sorted(COMPRESS))
@pytest.mark.parametrize("damage", ["cut", "corrupt"])
def test_a_damaged_archive_is_read_up_to_the_damage_and_counted(tmp_path, ext, damage):
    whole = COMPRESS[ext](_text().encode())
    if damage == "cut":
        data = whole[: len(whole) * 2 // 3]
    else:  # bytes overwritten in the last third: the decoder fails there, or the checksum at the end
        k = len(whole) * 3 // 4
        data = whole[:k] + bytes(b ^ 0x5A for b in whole[k : k + 64]) + whole[k + 64 :]
    path = tmp_path / f"t.txt.{ext}"
    path.write_bytes(data)
    trace = load([path])
    assert 0 < trace.events.height < N  # what came before the damage
    counts = _counts(trace)
    if damage == "cut":
        # the cut last line is dropped, and counted too when it no longer parses as a record
        assert counts.pop("truncated_stream") == 1 and counts.get("truncated_record", 0) <= 1
        sample = trace.meta.problems[str(path)]["truncated_stream"]["samples"][0]["text"]
        assert f"{NAMES[ext]} archive is truncated" in sample
    else:
        # xz and bzip2 check each block: the damage ends the stream there; gzip's check comes at the
        # end and a zstd frame has none: damaged bytes decode into garbled lines, which are counted
        assert counts.get("truncated_stream", 0) == 1 or ext in ("gz", "zst"), counts
        assert counts, "damaged archive read as if whole"
    with pytest.raises(FormatError):
        load([path], strict=True)


@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_a_whole_archive_is_no_problem(tmp_path, ext):
    path = tmp_path / f"t.txt.{ext}"
    text = _text().encode()
    half = text.index(b"\n", len(text) // 2) + 1
    path.write_bytes(COMPRESS[ext](text[:half]) + COMPRESS[ext](text[half:]))  # two streams back to back
    trace = load([path])
    assert _counts(trace) == {} and trace.events.height == N


def test_analyze_names_a_truncated_archive_and_strict_makes_it_fatal(tmp_path):
    whole = lzma.compress(_text().encode())
    (tmp_path / "cut.txt.xz").write_bytes(whole[: len(whole) // 2])
    done = run(["analyze", "cut.txt.xz", "--json", "a.json"], tmp_path)
    assert done.rc == 0 and "Traceback" not in done.stderr, str(done)
    assert "truncated_stream" in done.stderr and "cut.txt.xz" in done.stderr, str(done)
    # a line of its own, naming the archive: the counts' first sample may be another line's
    flat = " ".join(done.stderr.split())
    assert "warning: cut.txt.xz: xz archive is truncated" in flat and "rest of the capture is missing" in flat
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["skipped_lines"]["by_reason"]["truncated_stream"] == 1
    (damaged,) = doc["skipped_lines"]["damaged"]
    assert damaged.endswith("cut.txt.xz: xz archive is truncated (the data ends inside a compressed stream)")
    trace = load([tmp_path / "cut.txt.xz"])
    page = render_report(trace, analyze(trace))  # the report says it too
    assert "input lines skipped" in page and "xz archive is truncated" in page
    with pytest.raises(FormatError, match=r"cut\.txt\.xz:\d+: .*xz archive is truncated"):
        load([tmp_path / "cut.txt.xz"], strict=True)  # (--strict: one line, tests/ingest/test_parse_cli.py)


def test_a_last_line_without_its_newline_is_counted_and_kept(tmp_path):
    text = _text(50)
    cut = text[: len(text) - 30]  # the last record loses the end of its payload and its newline
    (tmp_path / "cut.txt").write_text(cut)
    (tmp_path / "whole.txt").write_text(text)
    trace = load([tmp_path / "cut.txt"])
    assert _counts(trace) == {"last_line_cut": 1}
    assert trace.events.height == load([tmp_path / "whole.txt"]).events.height  # an excerpt may end so
    done = run(["analyze", "cut.txt", "--json", "a.json"], tmp_path)
    assert done.rc == 0 and "last_line_cut" in done.stderr and "cut.txt:52" in done.stderr, str(done)
    assert json.loads((tmp_path / "a.json").read_text())["skipped_lines"]["by_reason"] == {"last_line_cut": 1}
    with pytest.raises(FormatError, match=r"cut\.txt:52: .*may be cut mid-record"):
        load([tmp_path / "cut.txt"], strict=True)
    # the same read as a stream (compressed inputs, pipes: blocks of lines, never seeked)
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(cut.encode()))
    assert _counts(load([tmp_path / "cut.txt.gz"])) == {"last_line_cut": 1}


def test_a_file_ending_in_a_header_line_without_newline_is_no_problem(tmp_path):
    (tmp_path / "t.txt").write_text(_text(50) + "# end")
    assert _counts(load([tmp_path / "t.txt"])) == {}
