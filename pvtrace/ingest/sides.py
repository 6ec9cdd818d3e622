"""Which side recorded each input (host or guest) and the names of the guest VMs.

Host when an input has kvm_* events, `CPU n/KVM` threads or threads of the user's vCPU map;
else guest. Guest VM names come from the input names (trace-cmd -A `trace-<vm>.dat`, pvtrace's
own `<host>-<vm>.txt` renders) or the vm_name option.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from pvtrace.ingest.families import WAKEUPS

SIDES = ("auto", "host", "guest")
DEFAULT_GUEST_VM = "guest"
_VCPU_THREAD = r"^CPU \d+/KVM$"


def detect_sides(
    frame: pl.DataFrame, side: str | dict[str, str], user_map: pl.DataFrame | None, known: dict[str, str]
) -> pl.DataFrame:
    """One row per input source: its side and why (given, known from an earlier chunk, or detected)."""
    srcs = frame.select(pl.col("src").unique())
    if isinstance(side, str) and side != "auto":
        return srcs.with_columns(pl.lit(side).alias("side"), pl.lit("given").alias("side_how"))
    given = {**known, **side} if isinstance(side, dict) else dict(known)
    if set(srcs["src"].to_list()) <= set(given):  # every source settled (given, or by an earlier chunk)
        return srcs.with_columns(
            pl.col("src").replace_strict(given, return_dtype=pl.String).alias("side"),
            pl.lit("given").alias("side_how"),
        )
    fixed = pl.DataFrame(
        {"src": list(given), "given": list(given.values())}, schema={"src": pl.String, "given": pl.String}
    )
    return (
        srcs.join(fixed, on="src", how="left")
        .join(_sniff_sides(frame, user_map), on="src", how="left")
        .select(
            "src",
            pl.coalesce("given", "side").alias("side"),
            pl.when(pl.col("given").is_not_null())
            .then(pl.lit("given"))
            .otherwise(pl.col("side_how"))
            .alias("side_how"),
        )
    )


def _sniff_sides(frame: pl.DataFrame, user_map: pl.DataFrame | None) -> pl.DataFrame:
    """Host when a source has kvm_* events, `CPU n/KVM` threads or threads of the user map."""
    sched = pl.col("event").is_in(["sched_switch", *WAKEUPS, "sched_waking"])
    rows = []
    srcs = frame["src"].unique().to_list()
    for src in srcs:  # a handful of inputs; no group_by: it would copy the text columns
        part = frame if len(srcs) == 1 else frame.filter(pl.col("src") == src)
        events = part["event"].unique().drop_nulls().to_list()
        names = part.select(pl.col("comm").str.contains(_VCPU_THREAD).any()).item() or (
            part.filter(sched).select(pl.col("payload").str.contains(r"CPU \d+/KVM").any()).item()
        )
        mapped = (
            user_map is not None and part.select(pl.col("tid").is_in(user_map["tid"].implode()).any()).item()
        )
        rows.append(
            {
                "src": src,
                "kvm": any(e.startswith("kvm_") for e in events),
                "names": bool(names),
                "mapped": mapped,
            }
        )
    per = pl.DataFrame(
        rows, schema={"src": pl.String, "kvm": pl.Boolean, "names": pl.Boolean, "mapped": pl.Boolean}
    )
    return per.select(
        "src",
        pl.when(pl.col("kvm") | pl.col("names") | pl.col("mapped"))
        .then(pl.lit("host"))
        .otherwise(pl.lit("guest"))
        .alias("side"),
        pl.when(pl.col("kvm"))
        .then(pl.lit("kvm events present"))
        .when(pl.col("names"))
        .then(pl.lit("CPU n/KVM threads present"))
        .when(pl.col("mapped"))
        .then(pl.lit("threads of the vCPU map present"))
        .otherwise(pl.lit("no kvm events or vCPU threads"))
        .alias("side_how"),
    )


_NAME_SUFFIXES = (".gz", ".xz", ".zst", ".bz2", ".dat", ".txt", ".trace", ".log")


def trace_base(source: str) -> str:
    """A source label without directories and trace/compression suffixes."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    while name.endswith(_NAME_SUFFIXES):
        name = name[: name.rindex(".")]
    return name


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last))
    )
    return first[:n]


def guest_vm_names(
    sources: list[str], vm_name: str | None, host_sources: Sequence[str] = (), others: Sequence[str] = ()
) -> dict[str, str]:
    """VM name per guest source.

    The vm_name option when there is one guest input; else the part after the
    host input's name (`trace.dat` + `trace-<vm>.dat`, trace-cmd -A; `h.txt` +
    `h-<vm>.txt`, pvtrace's own renders); else, for several guest inputs, what
    follows their common `<prefix>-` (`run-vm0.txt`, `run-vm1.txt`); else after
    `trace-`; else the name itself when there are several inputs; else vm_name
    or "guest". others: the labels of inputs that gave no records (they still
    show the naming pattern).
    """
    if vm_name is not None and len(sources) == 1:
        return {sources[0]: vm_name}
    hosts = sorted((trace_base(h) for h in host_sources if h), key=len, reverse=True)
    bases = {src: trace_base(src) for src in sources}
    peers = [*bases.values(), *(trace_base(o) for o in others if o)]
    common = _common_prefix(peers) if len(peers) > 1 else ""
    common = common[: common.rfind("-") + 1]
    names: dict[str, str] = {}
    for src, base in bases.items():
        stem = next((h for h in hosts if base.startswith(h + "-") and len(base) > len(h) + 1), None)
        if stem is not None:
            names[src] = base[len(stem) + 1 :]
        elif common and len(base) > len(common):
            names[src] = base[len(common) :]
        elif base.startswith("trace-") and len(base) > len("trace-"):
            names[src] = base.removeprefix("trace-")
        elif src and (len(sources) > 1 or hosts):
            names[src] = base
        else:
            names[src] = vm_name or DEFAULT_GUEST_VM
    return names


def named_as_guest_of(guest: str, host: str) -> bool:
    """Whether a trace named `guest` is named like a guest half of the capture `host` is the host
    half of (`h-<vm>.txt` of `h.txt`, as pvtrace renders and trace-cmd -A names them): its base is
    the host's, a dash and a VM name."""
    g, h = trace_base(guest), trace_base(host)
    return bool(h) and g.startswith(h + "-") and len(g) > len(h) + 1


def guest_files_nearby(host_paths: Sequence[Path]) -> list[Path]:
    """Trace files next to host-only inputs named like their guests (`trace.dat` + `trace-<vm>.dat`,
    trace-cmd -A; `h.txt` + `h-<vm>.txt`, pvtrace's renders): the guest halves the user left out."""
    return _siblings(host_paths, lambda sib, given: named_as_guest_of(sib, given))


def host_files_nearby(guest_paths: Sequence[Path]) -> list[Path]:
    """Trace files next to guest-only inputs named like their host (`h-<vm>.txt` beside `h.txt`, as
    pvtrace renders and trace-cmd -A names them): the host half the user left out. A base with
    more than one dash fits at each (`lhp-demo-vm0.txt` -> `lhp-demo.txt`)."""
    return _siblings(guest_paths, lambda sib, given: named_as_guest_of(given, sib))


def _siblings(paths: Sequence[Path], fits: Callable[[str, str], bool]) -> list[Path]:
    """The trace files next to `paths`, not among them, whose name fits (sibling's, given's)."""
    given = {p.resolve() for p in paths}
    found: set[Path] = set()
    for path in paths:
        if not path.parent.is_dir():
            continue
        for sib in path.parent.iterdir():
            named = sib.name.endswith(_NAME_SUFFIXES) and fits(sib.name, path.name)
            if named and sib.is_file() and sib.resolve() not in given:
                found.add(sib)
    return sorted(found)
