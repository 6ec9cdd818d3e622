"""The guest clock offset estimated from the events themselves, with its uncertainty.

A guest prints lock events only while its vCPU is in guest mode, that is inside
one of that vCPU's host run intervals (from kvm_entry or the switch to its
thread, to the next kvm_exit, preemption or halt). The offset (host = guest +
offset) is the shift that puts the guest events inside those intervals: each
event allows a set of shifts (one range per run interval of its vCPU, widened by
the printed timestamp resolution), and the estimate is the shift range that
the most events allow. A few anchor events find the candidate ranges over any
offset (seconds to days); every event then narrows them. The estimate is the
middle of the best range and its uncertainty half its width. It is accepted only
when one range stands out (no other candidate fits as many events) and nearly
every event fits it; otherwise the clocks stay unaligned.

A guest clock that drifts against the host's (a guest TSC not synchronized, NTP slewing one
side) fits no single shift exactly: the shifts that fit the first and the last third of the
events move apart. The estimate then reports that drift and widens its uncertainty to cover
both thirds, so it never claims a precision the one-offset model does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

IN_KINDS = ("vcpu_run", "vm_entry")
OUT_KINDS = ("vm_exit", "vcpu_preempt", "vcpu_halt")
N_ANCHORS = 48
MAX_ANCHOR_ENDPOINTS = 20_000_000  # bounds the first sweep's memory on huge traces
MIN_FIT = 0.99  # share of guest events that must fit the estimate
MIN_EVENTS = 20
EDGE_NS = 1_000_000
NEAR_NS = 2_000
REFINE_INTERVALS = 4  # run intervals per event looked at inside a candidate range
TOO_FEW = "too few guest events, or no host runs of the VM's vCPUs, to estimate the offset"


@dataclass(frozen=True)
class Estimate:
    """An estimated offset: host = guest + offset_ns, within +- uncertainty_ns."""

    offset_ns: int
    uncertainty_ns: int
    n_events: int
    n_fit: int
    resolution_ns: int
    drift_ppm: float | None = None  # the first and last thirds of the events fit different shifts

    def to_dict(self) -> dict:
        out = {
            "offset_ns": self.offset_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "n_guest_events": self.n_events,
            "n_inside_runs": self.n_fit,
            "resolution_ns": self.resolution_ns,
        }
        if self.drift_ppm is not None:
            out["drift_ppm"] = round(self.drift_ppm, 3)
        return out


def run_intervals(host: pl.DataFrame) -> pl.DataFrame:
    """Per (vm, vcpu): start, end of each stretch the vCPU may have been in guest mode.

    host: vm, vcpu, kind, ts of host events, and `row` (their order among equal timestamps)
    when they are not in canonical order. A stretch open at the first or last event is
    closed at the host trace's first or last timestamp."""
    if host.height == 0:
        return pl.DataFrame(schema={"vm": pl.String, "vcpu": pl.Int64, "start": pl.Int64, "end": pl.Int64})
    t0, t1 = int(host["ts"].min()), int(host["ts"].max())
    kind = pl.col("kind").cast(pl.String)
    order = [c for c in ("row", "sub") if c in host.columns]
    ev = (
        host.filter(kind.is_in([*IN_KINDS, *OUT_KINDS]) & pl.col("vcpu").is_not_null())
        .with_row_index("_i")
        .select(
            pl.col("vm").cast(pl.String),
            pl.col("vcpu").cast(pl.Int64),
            kind.is_in(IN_KINDS).alias("is_in"),
            "ts",
            *order,
            "_i",
        )
        .sort("vm", "vcpu", "ts", *order, "_i")
    )
    same = (pl.col("vm") == pl.col("vm").shift(1)) & (pl.col("vcpu") == pl.col("vcpu").shift(1))
    ev = ev.with_columns(
        pl.when(same).then(pl.col("is_in").shift(1)).alias("prev_in"),
        pl.when(same).then(pl.col("ts").shift(1)).alias("prev_ts"),
        (~same.shift(-1).fill_null(False)).alias("last"),
    )
    closed = ev.filter(~pl.col("is_in")).select(
        "vm",
        "vcpu",
        pl.when(pl.col("prev_in"))
        .then(pl.col("prev_ts"))
        .when(pl.col("prev_in").is_null())
        .then(t0)
        .alias("start"),
        pl.col("ts").alias("end"),
    )
    open_end = ev.filter(pl.col("is_in") & pl.col("last")).select(
        "vm", "vcpu", pl.col("ts").alias("start"), pl.lit(t1, pl.Int64).alias("end")
    )
    # Just outside the host trace nothing contradicts a guest event (recordings rarely start and
    # stop together): every vCPU may run there, for EDGE_NS or 1% of the host trace.
    edge = -(-max(EDGE_NS, (t1 - t0) // 100) // 1000) * 1000  # whole us: keeps the resolution test
    vcpus = ev.select("vm", "vcpu").unique()
    outside = pl.concat(
        [
            vcpus.with_columns(pl.lit(t0 - edge, pl.Int64).alias("start"), pl.lit(t0, pl.Int64).alias("end")),
            vcpus.with_columns(pl.lit(t1, pl.Int64).alias("start"), pl.lit(t1 + edge, pl.Int64).alias("end")),
        ]
    )
    return pl.concat([closed.drop_nulls("start"), open_end, outside]).sort("vm", "vcpu", "start")


def _merged(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted intervals with overlapping neighbours joined (widening may make them touch)."""
    if starts.size == 0:
        return starts, ends
    run_end = np.maximum.accumulate(ends)
    new = np.ones(starts.size, dtype=bool)
    new[1:] = starts[1:] > run_end[:-1]
    group = np.cumsum(new) - 1
    s = starts[new]
    e = np.full(s.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(e, group, ends)
    return s, e


def _best_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[int, list[tuple[int, int]]]:
    """The highest coverage of closed ranges [lo, hi] and every maximal range reaching it."""
    pos = np.concatenate([lo, hi])
    step = np.concatenate([np.ones(lo.size, np.int64), -np.ones(hi.size, np.int64)])
    order = np.lexsort((-step, pos))  # at one point, openings before closings (closed ranges)
    pos, step = pos[order], step[order]
    cover = np.cumsum(step)
    best = int(cover.max()) if cover.size else 0
    at = np.flatnonzero(cover == best)
    return best, [(int(pos[i]), int(pos[i + 1])) for i in at if i + 1 < pos.size]


def _shift_ranges(
    g: np.ndarray,
    vcpu: np.ndarray,
    runs: dict[int, tuple[np.ndarray, np.ndarray]],
    window: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each guest event (ts g on vCPU vcpu), the shift ranges putting it inside a run; with a
    window, only the runs that shifts inside the window can reach (at most REFINE_INTERVALS each)."""
    los, his = [], []
    for c in np.unique(vcpu):
        if c not in runs:
            continue
        s, e = runs[c]
        gc = g[vcpu == c]
        if window is None:
            los.append((s[None, :] - gc[:, None]).ravel())
            his.append((e[None, :] - gc[:, None]).ravel())
            continue
        first = np.searchsorted(e, gc + window[0], side="left")
        for k in range(REFINE_INTERVALS):
            j = first + k
            ok = j < s.size
            j, gk = j[ok], gc[ok]
            reach = s[j] - gk <= window[1]
            los.append(np.maximum(s[j][reach] - gk[reach], window[0]))
            his.append(np.minimum(e[j][reach] - gk[reach], window[1]))
    if not los:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(los), np.concatenate(his)


def estimate_offset(runs_of_vm: pl.DataFrame, guest_of_vm: pl.DataFrame) -> Estimate | str:
    """The offset of one VM's guest clock, or why the events do not settle it.

    runs_of_vm: vcpu, start, end (run_intervals of the VM); guest_of_vm: vcpu, ts of its guest
    lock events on the guest's own clock."""
    guest = guest_of_vm.drop_nulls(["vcpu", "ts"]).sort("ts")
    if guest.height < MIN_EVENTS or runs_of_vm.height == 0:
        return TOO_FEW
    g = guest["ts"].to_numpy().astype(np.int64)
    vcpu = guest["vcpu"].to_numpy().astype(np.int64)
    all_ts = np.concatenate([g, runs_of_vm["start"].to_numpy(), runs_of_vm["end"].to_numpy()])
    res = 1000 if np.all(all_ts % 1000 == 0) else 1
    span = (int(runs_of_vm["start"].min()), int(runs_of_vm["end"].max()))
    runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for (c,), part in runs_of_vm.group_by(["vcpu"]):
        part = part.sort("start")
        runs[int(c)] = _merged(part["start"].to_numpy() - res, part["end"].to_numpy() + res)
    known = np.isin(vcpu, np.array(list(runs), dtype=np.int64))
    g, vcpu = g[known], vcpu[known]
    if g.size < MIN_EVENTS:
        return TOO_FEW
    longest = max(r[0].size for r in runs.values())
    n_anchors = int(max(4, min(N_ANCHORS, MAX_ANCHOR_ENDPOINTS // max(longest, 1))))
    pick = np.unique(np.linspace(0, g.size - 1, n_anchors).astype(np.int64))
    _, candidates = _best_ranges(*_shift_ranges(g[pick], vcpu[pick], runs, None))
    scored = []
    for window in candidates[:16]:
        fit, ranges = _best_ranges(*_shift_ranges(g, vcpu, runs, window))
        if ranges:
            scored.append((fit, ranges))
    if not scored:
        return "no shift puts the guest events inside their vCPUs' run intervals"
    top = max(f for f, _ in scored)
    best = [r for f, rs in scored if f == top for r in rs]
    # no shift at all (host and guest already on one timeline) wins when it fits as well as any,
    # or when it fits nearly every guest event the host recorded around: events after the host
    # stopped recording (or before it started) cannot speak against it, while a distant shift can
    # fit those too by chance
    zero = [r for r in best if r[0] <= 0 <= r[1]]
    if not zero:
        fit0, ranges0 = _best_ranges(*_shift_ranges(g, vcpu, runs, (-NEAR_NS, NEAR_NS)))
        n_span0 = int(np.count_nonzero((g >= span[0]) & (g <= span[1])))
        zero = [r for r in ranges0 if r[0] <= 0 <= r[1]]
        if zero and fit0 >= MIN_EVENTS and fit0 >= MIN_FIT * n_span0:
            top = fit0
        else:
            zero = []
    best = zero or best
    # else a distant shift that fits nearly as many events makes the best one a matter of chance
    rivals = [f for f, rs in scored if f < top and all(abs(r[0] - best[0][0]) > 100 * res for r in rs)]
    if not zero and rivals and max(rivals) >= top - max(2, top // 100):
        return f"ambiguous: shifts far apart fit {top} and {max(rivals)} guest events"
    lo, hi = min(r[0] for r in best), max(r[1] for r in best)
    # several shifts fit as well: ambiguous when they are far apart; when they all lie within
    # NEAR_NS the offset is known to that width, and the uncertainty says so
    if len(best) > 1 and hi - lo > max(100 * res, NEAR_NS):
        return f"ambiguous: shifts {lo} and {hi} ns fit the guest events equally well"
    offset = (lo + hi) // 2
    # events the host did not record around (before its first or after its last event) cannot be
    # checked: the fit is judged on the others
    n_span = int(np.count_nonzero((g + offset >= span[0]) & (g + offset <= span[1])))
    if top < MIN_EVENTS or top < MIN_FIT * n_span:
        return (
            f"no shift puts {MIN_FIT:.0%} of the guest events inside their vCPUs' run intervals "
            f"(best: {top} of {n_span})"
        )
    uncertainty = (hi - lo + 1) // 2
    drift_ppm = None
    spread = _thirds(g, vcpu, runs, (lo, hi), res)
    if spread is not None:
        (lo_t, hi_t), drift_ppm = spread
        if drift_ppm is not None:  # a drift the events show: centred on the whole trace's offsets
            offset = (lo_t + hi_t) // 2
        uncertainty = max(uncertainty, offset - lo_t, hi_t - offset)
    return Estimate(
        offset_ns=offset,
        uncertainty_ns=uncertainty,
        n_events=n_span,
        n_fit=int(top),
        resolution_ns=res,
        drift_ppm=drift_ppm,
    )


def _thirds(
    g: np.ndarray,
    vcpu: np.ndarray,
    runs: dict[int, tuple[np.ndarray, np.ndarray]],
    best: tuple[int, int],
    res: int,
) -> tuple[tuple[int, int], float | None] | None:
    """The offsets the first and the last third of the events allow, taken together: a clock that
    drifts less than the events can show still moves the offset within them, so the uncertainty
    covers both. When the two ranges do not overlap the drift shows: the range then spans the line
    through them carried to the first and last event, with the drift in ppm (how fast the guest
    clock runs against the host's)."""
    third = g.size // 3
    if third < MIN_EVENTS:
        return None
    reach = max(NEAR_NS, 100 * res) + (best[1] - best[0])
    window = (best[0] - reach, best[1] + reach)
    found = []
    for part in (slice(0, third), slice(g.size - third, g.size)):
        fit, ranges = _best_ranges(*_shift_ranges(g[part], vcpu[part], runs, window))
        if not ranges or fit < MIN_FIT * third:
            return None
        found.append((min(r[0] for r in ranges), max(r[1] for r in ranges), float(np.median(g[part]))))
    (lo_a, hi_a, t_a), (lo_b, hi_b, t_b) = found
    if (lo_b <= hi_a and lo_a <= hi_b) or t_b <= t_a:  # the thirds agree
        return (min(lo_a, lo_b), max(hi_a, hi_b)), None
    slope = ((lo_b + hi_b) / 2 - (lo_a + hi_a) / 2) / (t_b - t_a)  # offset change per guest ns
    half = max(hi_a - lo_a, hi_b - lo_b) / 2
    ends = [(lo_a + hi_a) / 2 + slope * (t - t_a) for t in (float(g.min()), float(g.max()))]
    lo, hi = min(lo_a, lo_b, *(e - half for e in ends)), max(hi_a, hi_b, *(e + half for e in ends))
    pad = res + (hi - lo) / 10  # the slope is itself an estimate: its extrapolation gets a margin
    # the offset shrinks when the guest clock runs fast
    return (int(np.floor(lo - pad)), int(np.ceil(hi + pad))), -slope * 1e6


def estimate_offsets(host: pl.DataFrame, guest: pl.DataFrame) -> dict[str, Estimate | str]:
    """Per guest VM: its estimated offset, or why there is none (TOO_FEW: not enough events to try).

    host: vm, vcpu, kind, ts (host clock); guest: vm, vcpu, ts (guest clocks)."""
    runs = run_intervals(host)
    out: dict[str, Estimate | None] = {}
    for vm in sorted(guest["vm"].drop_nulls().unique().cast(pl.String).to_list()):
        mine = runs.filter(pl.col("vm") == vm)
        if mine.height == 0:
            out[vm] = TOO_FEW
            continue
        out[vm] = estimate_offset(mine.drop("vm"), guest.filter(pl.col("vm").cast(pl.String) == vm))
    return out


def resolution(ts: pl.Series) -> int:
    """1000 when every timestamp is a whole microsecond (ftrace, perf without --ns), else 1."""
    ts = ts.drop_nulls()
    return 1000 if ts.len() and bool((ts % 1000 == 0).all()) else 1


def snap_to_runs(host: pl.DataFrame, guest: pl.DataFrame, tolerance: int) -> tuple[pl.DataFrame, int]:
    """Guest events moved inside their vCPU's run when printed just outside it (by at most
    `tolerance` ns: timestamps cut to microseconds on each side, an estimated offset), and how
    many moved. A guest event happens while its vCPU runs: one printed a few hundred ns before
    the host saw the vCPU resume would make its acquirer a holder that is not running.

    A run printed with no length (entry and exit in one microsecond: a vCPU that resumes, takes
    a lock and makes a kick hypercall within it) has no instant inside it, so an event snapped
    to it takes the entry's timestamp and its place in the order (`row`, `sub`): right after the
    entry, before the exit.

    host: vm, vcpu, kind, ts[, row, sub]; guest: events with vm, vcpu, ts (host clock)[, row, sub]."""
    if tolerance <= 1 or guest.height == 0 or host.height == 0:
        return guest, 0
    runs = run_intervals(host).select(pl.col("vm"), pl.col("vcpu").cast(pl.Int64), "start", "end")
    ordered = {"row", "sub"} <= set(host.columns) and {"row", "sub"} <= set(guest.columns)
    if ordered:  # where each run's entry stands in the order of equal timestamps
        entries = (
            host.filter(pl.col("kind").cast(pl.String).is_in(IN_KINDS) & pl.col("vcpu").is_not_null())
            .group_by(
                pl.col("vm").cast(pl.String), pl.col("vcpu").cast(pl.Int64), pl.col("ts").alias("start")
            )
            .agg(pl.col("row", "sub").sort_by("row", "sub").last())
        )
        runs = runs.join(entries, on=["vm", "vcpu", "start"], how="left")
    else:
        runs = runs.filter(pl.col("end") - pl.col("start") >= 2)
    runs = runs.sort("start")
    g = guest.with_row_index("_g").with_columns(
        pl.col("vm").cast(pl.String).alias("_vm"), pl.col("vcpu").cast(pl.Int64).alias("_vcpu")
    )
    keys = g.select("_g", "_vm", "_vcpu", "ts").drop_nulls().sort("ts")
    placed = ["row", "sub"] if ordered else []
    before = keys.join_asof(
        runs.rename({"vm": "_vm", "vcpu": "_vcpu"}).rename({c: f"_{c}" for c in placed}),
        left_on="ts",
        right_on="start",
        by=["_vm", "_vcpu"],
        strategy="backward",
        check_sortedness=False,
    )
    after = keys.join_asof(
        runs.rename({"vm": "_vm", "vcpu": "_vcpu", "start": "next_start", "end": "next_end"}).rename(
            {c: f"_next_{c}" for c in placed}
        ),
        left_on="ts",
        right_on="next_start",
        by=["_vm", "_vcpu"],
        strategy="forward",
        check_sortedness=False,
    ).select("_g", "next_start", "next_end", *[f"_next_{c}" for c in placed])
    near = before.join(after, on="_g").with_columns(
        (pl.col("ts") - pl.col("end")).alias("late"), (pl.col("next_start") - pl.col("ts")).alias("early")
    )
    outside = pl.col("end").is_null() | (pl.col("ts") > pl.col("end"))
    to_prev = (pl.col("late") <= tolerance) & (pl.col("late") <= pl.col("early").fill_null(tolerance + 1))
    to_next = pl.col("early") <= tolerance
    prev_flat = pl.col("end") - pl.col("start") < 2
    next_flat = pl.col("next_end") - pl.col("next_start") < 2
    fix = (
        near.filter(outside)
        .with_columns(
            pl.when(to_prev & prev_flat)
            .then(pl.col("start"))
            .when(to_prev)
            .then(pl.col("end") - 1)
            .when(to_next & next_flat)
            .then(pl.col("next_start"))
            .when(to_next)
            .then(pl.col("next_start") + 1)
            .alias("snapped"),
            *[
                pl.when(to_prev & prev_flat)
                .then(pl.col(f"_{c}"))
                .when(~to_prev & to_next & next_flat)
                .then(pl.col(f"_next_{c}"))
                .alias(f"_snapped_{c}")
                for c in placed
            ],
        )
        .filter(pl.col("snapped").is_not_null())
    )
    if fix.height == 0:
        return guest, 0
    moved = g.join(fix.select("_g", "snapped", *[f"_snapped_{c}" for c in placed]), on="_g", how="left")
    moved = moved.with_columns(
        pl.coalesce("snapped", "ts").alias("ts"),
        *[pl.coalesce(f"_snapped_{c}", c).cast(g.schema[c]).alias(c) for c in placed],
    )
    return moved.drop("_g", "_vm", "_vcpu", "snapped", *[f"_snapped_{c}" for c in placed]), fix.height
