"""Inputs that are one trace (one file twice, or a copy of it): refused, since each copy's events
would be counted again."""

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


def refuse_copies(inputs: list) -> None:
    """Two inputs whose decompressed text begins alike (the first MiB the sniffer read, or the whole
    of a smaller file) are one capture given twice (a copy, or the archive beside its text): refuse
    it, naming both. Different captures differ within their first records (timestamps, CPUs)."""
    seen: dict[bytes, Path] = {}
    for inp in inputs:
        if str(inp.path) == "-" or not _has_records(inp.head):  # two empty captures are alike and fine
            continue
        first = seen.setdefault(inp.head, inp.path)
        if first is not inp.path:
            raise UsageError(
                f"{inp.path}: the same trace as {first} (their text begins alike); its events would be "
                "counted twice"
            )


def _has_records(head: bytes) -> bool:
    """More than a header: a few lines that are not comments (ftrace's `#` lines, trace-cmd's
    `cpus=N` line per file), or binary content."""
    if b"\0" in head[:4096]:
        return True
    lines = (line.strip() for line in head.splitlines()[:64])
    return sum(1 for line in lines if line and not line.startswith(b"#")) >= 5
