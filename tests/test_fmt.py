"""Lock ids print one way everywhere and can be found in the raw trace."""

from __future__ import annotations

import polars as pl

from pvtrace.fmt import fmt_lock, fmt_trace_time, guest_clocks, host_time, lock_hex


def test_lock_ids_keep_the_leading_zeros_of_a_hashed_pointer():
    # a guest ftrace prints a hashed %p zero-padded: `contention_begin: 000000000e187448`
    values = [0xE187448, 0x1, 0xFFFF88810A400000, 0x1_0000_0000]
    want = ["0x0e187448", "0x00000001", "0xffff88810a400000", "0x100000000"]
    assert [fmt_lock(v) for v in values] == want
    frame = pl.DataFrame({"lock": [*values, None]}, schema={"lock": pl.UInt64})
    assert frame.select(lock_hex())["lock"].to_list() == [*want, None]
    assert "000000000e187448".endswith(fmt_lock(0xE187448)[2:])


def test_trace_time_of_a_guest_on_its_own_clock_is_also_given_as_its_file_prints_it():
    offsets = {"vm1": -15_000_543_656}  # a guest printed 15.221935; on the host clock 0.221391344
    clocks = guest_clocks({"clock": {"guest_offset_ns": offsets}})
    assert clocks == {"vm1": (-15_000_543_656, 0.0, 0, 1)} and guest_clocks({}) == {}
    assert fmt_trace_time(221_391_344, "vm1", clocks) == "0.221391344 (vm1 15.221935)"
    assert fmt_trace_time(221_391_000, "vm0", clocks) == "0.221391"  # one clock with the host
    assert fmt_trace_time(None, "vm1", clocks) == "-"


def test_trace_time_of_a_guest_is_printed_to_its_files_resolution():
    """An offset estimated to the nanosecond puts a host time between a microsecond guest file's
    ticks: the guest time is given as that file prints it (the nearest microsecond), not with
    digits the file lacks."""
    clock = {"guest_offset_ns": {"vm0": -10_000_271_500}, "guests": {"vm0": {"resolution_ns": 1000}}}
    clocks = guest_clocks({"clock": clock})
    assert clocks == {"vm0": (-10_000_271_500, 0.0, 0, 1000)}
    assert fmt_trace_time(123_165_200, "vm0", clocks) == "0.123165200 (vm0 10.123437)"  # not 10.123436700
    nanos = guest_clocks({"clock": {**clock, "guests": {"vm0": {"resolution_ns": 1}}}})
    assert fmt_trace_time(123_165_200, "vm0", nanos) == "0.123165200 (vm0 10.123436700)"


def test_trace_time_of_a_drifting_guest_clock_is_the_time_its_file_prints():
    """host = guest + offset - drift * (guest - at): a guest clock 10 ppm fast, 1 s after `at`, reads
    10 us more than the offset alone gives."""
    clock = {
        "guest_offset_ns": {"vm1": -15_000_000_000},
        "guest_drift": {"vm1": {"drift_ppm": 10.0, "at_guest_ns": 15_000_000_000}},
    }
    clocks = guest_clocks({"clock": clock})
    assert clocks == {"vm1": (-15_000_000_000, 10.0, 15_000_000_000, 1)}
    # 1 s after `at` the guest clock has gained 10 us: host 1.000000 s is guest 16.000010 s
    assert fmt_trace_time(1_000_000_000, "vm1", clocks) == "1.000000 (vm1 16.000010)"
    # and back: the guest's reading 16.000010 s is host 1 s (what --window's hint uses)
    assert host_time(16_000_010_000, clocks["vm1"]) == 1_000_000_000
