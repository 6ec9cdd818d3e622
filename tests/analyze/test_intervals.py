"""The interval primitives on tiny tables."""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.intervals import Window, changes_to_partition, lookup, overlay, split, union

W = Window(0, 100)


def part():
    ch = pl.DataFrame({"key": [0, 0, 0, 1], "ts": [10, 10, 50, 30], "v": ["a", "b", "c", "d"]})
    return changes_to_partition(ch, key="key", values=["v"], n_keys=3, window=W, initial={"v": "u"})


def test_partition_covers_window_and_keeps_last_change_at_a_tie():
    assert part().rows() == [
        (0, 0, 10, "u"),
        (0, 10, 50, "b"),
        (0, 50, 100, "c"),
        (1, 0, 30, "u"),
        (1, 30, 100, "d"),
        (2, 0, 100, "u"),
    ]


def test_split_gives_one_row_per_overlap():
    iv = pl.DataFrame(
        {"id": [1, 2, 3, 4], "key": [0, 0, 1, 2], "start": [5, 60, 30, 40], "end": [55, 60, 31, 41]}
    )
    got = split(iv, part(), by="key", window=W, values=["v"]).sort("id", "start")
    assert got.rows() == [
        (1, 0, 5, 10, "u"),
        (1, 0, 10, 50, "b"),
        (1, 0, 50, 55, "c"),
        (3, 1, 30, 31, "d"),
        (4, 2, 40, 41, "u"),
    ]


def test_overlay_and_union():
    win = pl.DataFrame({"key": [0, 0], "start": [20, 40], "end": [45, 60]})
    got = overlay(part(), win, key="key", values=["v"], set_values={"v": "x"}, window=W)
    assert got.filter(pl.col("key") == 0).rows() == [
        (0, 0, 10, "u"),
        (0, 10, 20, "b"),
        (0, 20, 60, "x"),
        (0, 60, 100, "c"),
    ]
    assert union(win, key="key").rows() == [(0, 20, 60)]


def test_lookup_directions():
    table = pl.DataFrame({"key": [0, 0, 1], "t": [5, 9, 7], "v": [1, 2, 3]})
    pts = pl.DataFrame({"k": [0, 0, 0, 1, 1], "t": [4, 5, 9, 6, 8]})
    back = lookup(pts, table, by="k", on="t", values=["v"])
    assert back["v"].to_list() == [None, 1, 2, None, 3]
    strict = lookup(pts, table, by="k", on="t", values=["v"], strict=True)
    assert strict["v"].to_list() == [None, None, 1, None, 3]
    fwd = lookup(pts, table, by="k", on="t", values=["v"], direction="forward", strict=True)
    assert fwd["v"].to_list() == [1, 2, None, 3, None]
