"""Inputs that are one file: refused, since each copy's events would be counted again."""

from __future__ import annotations

from pathlib import Path

from pvtrace.errors import UsageError


def refuse_repeats(paths: list[Path]) -> None:
    """One file given twice (by the same name, another spelling or a link) would count every
    event twice: refuse it, naming the file."""
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        try:
            st = p.stat() if str(p) != "-" else None
        except OSError:  # a missing or unreadable file is reported where it is opened
            continue
        if st is None:
            continue
        first = seen.setdefault((st.st_dev, st.st_ino), p)
        if first is not p:
            same = "twice" if str(first) == str(p) else f"twice (as {first} and {p})"
            raise UsageError(f"{p}: the same file is given {same}; its events would be counted twice")
