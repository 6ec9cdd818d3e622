"""How every output writes values for people: durations, trace timestamps, lock ids, plurals.

One module so that the terminal, the --out-dir CSV tables, the JSON and the report
pages agree: durations in the unit that keeps them readable with one spelling of
microseconds (µs), timestamps as the trace printed them (seconds.micro- or
nanoseconds), lock ids as 0x hex.
"""

from __future__ import annotations

import re

import polars as pl


def fmt_ns(ns: float | int | None, missing: str = "-") -> str:
    """A duration in the unit that keeps it readable: 420 ns, 3.2 µs, 5.62 ms, 17.1 s."""
    if ns is None:
        return missing
    a = abs(ns)
    if a < 1_000:
        return f"{ns:.0f} ns" if float(ns).is_integer() or a >= 10 else f"{ns:.2g} ns"
    if a < 1_000_000:
        return f"{ns / 1e3:.3g} µs"
    if a < 1_000_000_000:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e9:.3g} s" if a < 1000e9 else f"{ns / 1e9:,.0f} s"


def fmt_2dp(value: float | None, missing: str = "-") -> str:
    """A share or ratio with two decimals; `missing` where it is unknown (never 0.00)."""
    return missing if value is None else f"{value:.2f}"


def clock_tick(*frames: pl.DataFrame) -> int:
    """The trace's time resolution as the intervals of the first non-empty frame (start, end)
    show it: 1000 when every length is a whole microsecond (ftrace's and perf's default clock
    print), else 1. Lengths, not timestamps: a guest clock offset moves both ends alike."""
    for df in frames:
        if df.height:
            whole = df.select(((pl.col("end") - pl.col("start")) % 1000 == 0).all()).item()
            return 1000 if whole else 1
    return 1


def fmt_wait(ns: float | int | None, tick: int = 1) -> str:
    """A wait (or a sum of them): below the trace's resolution (clock_tick) it is `< 1 µs`, and
    a measured 0 is always below it; never `0 ns`."""
    if ns is not None and (ns == 0 or (tick > 1 and ns < tick)):
        return "< 1 µs"
    return fmt_ns(ns)


def fmt_ts(ns: int | None) -> str:
    """An absolute trace timestamp as ftrace, trace-cmd and perf print it: seconds with six
    decimals (nine when the trace has nanoseconds), so it can be searched in the raw trace."""
    if ns is None:
        return "-"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    sec, frac = divmod(int(ns), 1_000_000_000)
    text = f"{frac:09d}"
    return f"{sign}{sec}.{text[:6] if text.endswith('000') else text}"


def fmt_trace_time(
    ns: int | None, vm: str | None, clocks: dict[str, tuple[int, float, int, int]] | None
) -> str:
    """fmt_ts, and for a guest VM on its own clock (clocks: guest_clocks) also the time that
    guest's file prints, to its resolution: `0.221391 (vm1 15.221935)`, so an incident is found in
    either file (an offset estimated to the nanosecond must not print digits a microsecond file lacks)."""
    offset, ppm, at, res = (clocks or {}).get(vm or "", (0, 0.0, 0, 1))
    if ns is None or not (offset or ppm):
        return fmt_ts(ns)
    slope = -ppm / 1e6  # host = guest + offset + slope * (guest - at), solved for guest
    guest = (int(ns) - offset + slope * at) / (1 + slope)
    return f"{fmt_ts(ns)} ({vm} {fmt_ts(round(guest / res) * res)})"


def host_time(guest_ns: int, clock: tuple[int, float, int, int]) -> int:
    """The host time of a guest clock reading (clock: one entry of guest_clocks)."""
    offset, ppm, at, _ = clock
    return round(guest_ns + offset - ppm / 1e6 * (guest_ns - at))


def guest_clocks(extra: dict) -> dict[str, tuple[int, float, int, int]]:
    """Each guest clock of an analysis summary's extra as (offset_ns, drift_ppm, at_guest_ns,
    resolution_ns): host = guest + offset - drift_ppm * 1e-6 * (guest - at), the guest file's
    timestamps printed to resolution_ns (1000: microseconds); empty when all share one clock."""
    clock = extra.get("clock") or {}
    drifts = clock.get("guest_drift") or {}
    guests = clock.get("guests") or {}
    return {
        vm: (
            int(offset),
            float(drifts.get(vm, {}).get("drift_ppm", 0.0)),
            int(drifts.get(vm, {}).get("at_guest_ns", 0)),
            int((guests.get(vm) or {}).get("resolution_ns") or 1),
        )
        for vm, offset in (clock.get("guest_offset_ns") or {}).items()
    }


def fmt_lock(addr: int | None) -> str:
    """A lock id: 0x hex, the one notation of every output, at least 8 digits: a hashed `%p`
    (32 bits, printed zero-padded: `000000000e187448`) keeps its leading zero (`0x0e187448`),
    so the id is found in the raw trace."""
    return "-" if addr is None else f"{int(addr):#010x}"


def lock_hex(col: str = "lock") -> pl.Expr:
    """fmt_lock as a vectorized polars expression (for CSV and JSON tables): 16 nibbles, each
    looked up as a digit, joined, leading zeros stripped down to 8 digits."""
    x = pl.col(col).cast(pl.UInt64)
    digits = [
        ((x // (16**i)) % 16).replace_strict(
            list(range(16)), list("0123456789abcdef"), return_dtype=pl.String
        )
        for i in range(15, -1, -1)
    ]
    text = pl.concat_str(digits).str.strip_chars_start("0").str.pad_start(8, "0")
    return pl.when(x.is_null()).then(pl.lit(None, pl.String)).otherwise(pl.lit("0x") + text).alias(col)


# A lock's waste that is LHP alone: its LWP is unknown (its kind is undecided), and what that LWP reads.
LHP_ONLY = " (LHP only)"
LWP_UNKNOWN = "unknown (kind undecided)"


def fmt_waste(ns: int | None, lhp_only: bool) -> str:
    """A lock's spin waste, marked where it is LHP alone."""
    return fmt_ns(ns) + (LHP_ONLY if lhp_only else "")


# An LHP incident whose holder no take in the trace shows (lhp_incidents.holder_guessed), as both
# the terminal and the report page explain it under their incident lists.
LIKELY_HOLDER_NOTE = (
    "likely holder: no take of the lock by that vCPU is in the trace (uncontended takes print "
    "nothing); of the siblings that could have taken it unseen, it is the likeliest "
    "(docs/metrics.md, Unseen holder)"
)


def incident_role(kind: str, guessed: bool) -> str:
    """What an incident's vCPU is to its lock: holder (likely holder when guessed) or next owner."""
    if kind != "LHP":
        return "next owner"
    return "likely holder" if guessed else "holder"


def several_vms(*frames: pl.DataFrame) -> bool:
    """Whether these tables' `vm` columns name more than one VM, so a vCPU is written vm0/1, not 1.
    Given the trace's vCPU states and waits beside the table shown: with all incidents in vm1 of
    two VMs, a bare '0 (next owner)' sat beside 'ran instead: vm1/3'."""
    return pl.concat([f["vm"].unique().cast(pl.String) for f in frames]).drop_nulls().n_unique() > 1


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 reason`, `2 reasons`."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def parse_trace_time(text: str, t0: int | None) -> int:
    """A --window bound: a trace timestamp as printed (`1938.454793`, seconds) or, with a unit
    (`2ms`, `1.5s`, `300us`, `10ns`), a time from the trace start t0."""
    m = re.fullmatch(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(ns|us|µs|ms|s)?\s*", text)
    if m is None:
        raise ValueError(text)
    number, unit = m.group(1), m.group(2)
    if unit is None:
        sec, _, frac = number.lstrip("+").partition(".")
        neg = sec.startswith("-")
        value = abs(int(sec or "0")) * 1_000_000_000 + int((frac + "000000000")[:9])
        return -value if neg else value
    scale = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[unit]
    return (t0 or 0) + round(float(number) * scale)
