"""`<trace>.guest-offsets.csv`: each guest's clock offset, saved next to a host trace.

`pvtrace generate` writes it beside a host capture whose guest files are on
their own clocks, and `pvtrace record --host` beside what it records; `ingest`
and `analyze` pick it up next to any input, like the vCPU map. Columns: `vm`,
`offset_ns` (host = guest + offset_ns), optionally `drift_ppm` (a guest clock
that runs fast by that much: host = guest + offset_ns - drift_ppm * 1e-6 *
guest) and `source` (how it was found). Lines starting with `#` are comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import polars as pl

from pvtrace.errors import FormatError
from pvtrace.outputs import unreadable_why

OFFSETS_SUFFIX = ".guest-offsets.csv"
_COMPRESSED = {".xz", ".gz", ".zst", ".bz2"}


@dataclass(frozen=True)
class GivenClock:
    """A guest clock given with a drift: host = guest + offset_ns - drift_ppm * 1e-6 * guest.
    int() of it is the offset, so it stands wherever a given offset does."""

    offset_ns: int
    drift_ppm: float

    def __int__(self) -> int:
        return self.offset_ns


def offsets_path(trace_path: Path) -> Path:
    """Where a trace's offsets side file goes: `<trace>.guest-offsets.csv`."""
    return trace_path.with_name(trace_path.name + OFFSETS_SUFFIX)


def find_offsets_file(inputs: list[Path]) -> Path | None:
    """The side file next to the first input that has one (`t.txt.xz`: also `t.txt.guest-offsets.csv`)."""
    for path in map(Path, inputs):
        candidates = [offsets_path(path)]
        if path.suffix in _COMPRESSED:
            candidates.append(path.with_name(path.stem + OFFSETS_SUFFIX))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def read_offsets(path: Path) -> dict[str, int | GivenClock]:
    """{vm: offset_ns} from a side file (a GivenClock where it gives a drift); FormatError naming the
    file and line when it is not one."""
    try:
        df = pl.read_csv(path, infer_schema=False, comment_prefix="#", glob=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        why = unreadable_why(exc, path)
        raise FormatError(f"not a readable guest offsets CSV ({why})", str(path)) from None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = next((i for i, line in enumerate(lines, start=1) if not line.startswith("#")), 1)
    df = df.rename({c: c.strip().lower() for c in df.columns})
    if not {"vm", "offset_ns"} <= set(df.columns):
        raise FormatError("guest offsets CSV needs the columns vm,offset_ns", str(path), header)
    drifts = df["drift_ppm"] if "drift_ppm" in df.columns else pl.Series([None] * df.height)
    out: dict[str, int | GivenClock] = {}
    for i, (vm, value, drift) in enumerate(
        zip(df["vm"], df["offset_ns"], drifts, strict=True), start=header + 1
    ):
        try:
            offset = int(str(value).strip())
        except ValueError:
            raise FormatError(f"offset_ns {value!r} is not an integer (ns)", str(path), i) from None
        try:
            ppm = float(str(drift).strip()) if drift is not None and str(drift).strip() else 0.0
        except ValueError:
            raise FormatError(f"drift_ppm {drift!r} is not a number (ppm)", str(path), i) from None
        out[str(vm).strip()] = GivenClock(offset, ppm) if ppm else offset
    return out


def write_offsets(offsets: dict[str, int | GivenClock], out: TextIO, source: str) -> None:
    """Write {vm: offset_ns} (host = guest + offset_ns; with a drift where a GivenClock gives one)
    with where the offsets came from."""
    drifting = any(isinstance(v, GivenClock) and v.drift_ppm for v in offsets.values())
    rows = pl.DataFrame(
        {
            "vm": list(offsets),
            "offset_ns": [int(v) for v in offsets.values()],
            **({"drift_ppm": [getattr(v, "drift_ppm", 0.0) for v in offsets.values()]} if drifting else {}),
            "source": [source] * len(offsets),
        },
        schema={
            "vm": pl.String,
            "offset_ns": pl.Int64,
            **({"drift_ppm": pl.Float64} if drifting else {}),
            "source": pl.String,
        },
    )
    out.write(
        "# guest clock offsets: host timestamp = guest timestamp + offset_ns"
        + (" - drift_ppm * 1e-6 * guest timestamp\n" if drifting else "\n")
    )
    out.write(rows.write_csv(float_precision=9) if drifting else rows.write_csv())
