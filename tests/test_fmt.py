"""Lock ids print one way everywhere and can be found in the raw trace."""

from __future__ import annotations

import polars as pl

from pvtrace.fmt import fmt_lock, lock_hex


def test_lock_ids_keep_the_leading_zeros_of_a_hashed_pointer():
    # a guest ftrace prints a hashed %p zero-padded: `contention_begin: 000000000e187448`
    values = [0xE187448, 0x1, 0xFFFF88810A400000, 0x1_0000_0000]
    want = ["0x0e187448", "0x00000001", "0xffff88810a400000", "0x100000000"]
    assert [fmt_lock(v) for v in values] == want
    frame = pl.DataFrame({"lock": [*values, None]}, schema={"lock": pl.UInt64})
    assert frame.select(lock_hex())["lock"].to_list() == [*want, None]
    assert "000000000e187448".endswith(fmt_lock(0xE187448)[2:])
