"""The guest clock offset and drift estimated from the events themselves, with their uncertainty.

A guest prints lock events only while its vCPU is in guest mode, that is inside
one of that vCPU's host run intervals (from kvm_entry or the switch to its
thread, to the next kvm_exit, preemption or halt). The guest clock is the line
host = guest + offset + slope * (guest - at) that puts the guest events inside
those intervals (widened by the printed timestamp resolution); `at` is the
middle of the guest's events, slope = -drift (a guest clock running fast by 1
ppm has slope -1e-6). A few anchor events find the candidate offsets over any
offset (seconds to days); a grid of slopes, zooming in, finds the line that fits
the most events near each; the events that line fits then pin every line that
keeps them inside their runs (a convex polygon, clock_fit.Polygon), widened
over the gaps to the neighbouring runs the other events let an event reach. The
estimate is a line of that polygon, and its uncertainties the distance to the
polygon's farthest lines: of the offset at `at`, of the drift, and of the host time of any
guest event (span_uncertainty_ns). It is accepted only when one offset stands
out (no other candidate fits as many events) and nearly every event fits it;
otherwise the clocks stay unaligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pvtrace.ingest.clock_fit import Polygon, freed_extents

IN_KINDS = ("vcpu_run", "vm_entry")
OUT_KINDS = ("vm_exit", "vcpu_preempt", "vcpu_halt")
N_ANCHORS = 48
MAX_ANCHOR_ENDPOINTS = 20_000_000  # bounds the first sweep's memory on huge traces
MIN_FIT = 0.99  # share of guest events that must fit the estimate
MIN_EVENTS = 20
EDGE_NS = 1_000_000
NEAR_NS = 2_000
# The fastest a guest clock may run against the host's, either way: the slopes searched (a guest
# clock from the host's TSC through kvmclock does not drift; NTP slews a clock by 500 ppm at most
# and crystals are off by tens of ppm). A drift beyond it is not found.
MAX_DRIFT_PPM = 100.0
SLOPES = 9  # slopes per step of the drift grid
MAX_ZOOMS = 12  # steps of the drift grid at most
FINE_NS = 50  # the drift grid stops when a step moves the events at the ends by less than this
MAX_FIT_EVENTS = 5_000  # guest events the drift grid looks at (evenly thinned)
TOO_FEW = "too few guest events, or no host runs of the VM's vCPUs, to estimate the offset"


@dataclass(frozen=True)
class Estimate:
    """An estimated guest clock: host = guest + offset_ns - drift_ppm * 1e-6 * (guest - at_ns).

    offset_ns is within +- uncertainty_ns at guest time at_ns (the middle of the guest's events),
    drift_ppm within +- drift_uncertainty_ppm (0 when one offset fits: a drift the events do not
    show is not assumed), and the host time the line gives any guest event within
    +- span_uncertainty_ns (largest at the first and last events)."""

    offset_ns: int
    uncertainty_ns: int
    n_events: int
    n_fit: int
    resolution_ns: int
    at_ns: int = 0
    drift_ppm: float = 0.0
    drift_uncertainty_ppm: float = 0.0
    span_uncertainty_ns: int = 0

    def to_dict(self) -> dict:
        return {
            "offset_ns": self.offset_ns,
            "uncertainty_ns": self.uncertainty_ns,
            "at_guest_ns": self.at_ns,
            "drift_ppm": round(self.drift_ppm, 3),
            "drift_uncertainty_ppm": round(self.drift_uncertainty_ppm, 3),
            "span_uncertainty_ns": self.span_uncertainty_ns,
            "n_guest_events": self.n_events,
            "n_inside_runs": self.n_fit,
            "resolution_ns": self.resolution_ns,
        }


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


def _runs_by_vcpu(runs: pl.DataFrame, widen: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each vCPU's runs (vcpu, start, end), widened by `widen` ns on both sides (timestamps cut to
    the printed resolution) and merged: sorted starts and ends."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for (c,), part in runs.group_by(["vcpu"]):
        part = part.sort("start")
        out[int(c)] = _merged(part["start"].to_numpy() - widen, part["end"].to_numpy() + widen)
    return out


def _best_ranges(
    lo: np.ndarray, hi: np.ndarray, kind: str = "quicksort"
) -> tuple[int, list[tuple[int, int]]]:
    """The highest coverage of closed ranges [lo, hi] and every maximal range reaching it.

    The coverage peaks at a range's start: there it is the starts at or before it less the ends
    before it (two sorts and two binary searches); a peak lasts until the next end. kind="stable"
    for ranges that come as a few sorted runs (merged rather than sorted anew)."""
    if lo.size == 0:
        return 0, []
    starts, ends = np.sort(lo, kind=kind), np.sort(hi, kind=kind)
    cover = np.searchsorted(starts, starts, side="right") - np.searchsorted(ends, starts, side="left")
    best = int(cover.max())
    at = np.unique(starts[cover == best])
    return best, [
        (a.item(), b.item()) for a, b in zip(at, ends[np.searchsorted(ends, at, side="left")], strict=True)
    ]


def _shift_ranges(
    g: np.ndarray,
    vcpu: np.ndarray,
    runs: dict[int, tuple[np.ndarray, np.ndarray]],
    window: tuple[float, float] | None,
    slack: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each guest event (ts g on vCPU vcpu), the shift ranges putting it inside a run; with a
    window, only the runs that shifts inside the window reach, clipped to it; with a slack (per
    event), each range widened by it on both sides (and an event's ranges that then meet joined,
    so it counts once)."""
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
        wide = 0.0 if slack is None else slack[vcpu == c]
        first = np.searchsorted(e, gc + window[0] - wide, side="left")
        n = np.maximum(np.searchsorted(s, gc + window[1] + wide, side="right") - first, 0)
        event = np.repeat(np.arange(gc.size), n)
        j = first[event] + np.arange(event.size) - np.repeat(np.cumsum(n) - n, n)
        lo, hi = s[j] - gc[event], e[j] - gc[event]
        if slack is not None:
            lo, hi = lo - wide[event], hi + wide[event]
            new = np.ones(event.size, dtype=bool)
            new[1:] = (event[1:] != event[:-1]) | (lo[1:] > hi[:-1])
            last = np.append(new[1:], True)
            lo, hi = lo[new], hi[last]
        los.append(np.maximum(lo, window[0]))
        his.append(np.minimum(hi, window[1]))
    if not los:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(los), np.concatenate(his)


def _fit_slope(
    g: np.ndarray,
    u: np.ndarray,
    vcpu: np.ndarray,
    runs: dict[int, tuple[np.ndarray, np.ndarray]],
    window: tuple[float, float],
    res: int,
) -> tuple[int, float, list[tuple[float, float]]]:
    """The clock slope (host ns per guest ns, less 1) that fits the most guest events near a
    candidate offset, how many it fits and the offset ranges (at u = 0) that do.

    The slopes from -MAX_DRIFT_PPM to +MAX_DRIFT_PPM are cut into SLOPES cells; a cell's count is
    the events that fit some slope in it (each event's shift ranges at the cell's middle widened
    by half the cell times its distance from `at`), so the cell holding the right slope fits every
    event and no narrow fit falls between grid points. The cells that fit nearly as many as the
    best (one event less, or 0.2%) are cut finer, until a cell moves the events at the ends by less
    than the print resolution (or 50 ns). A cell counts only the events whose widening stays within
    NEAR_NS (those near `at`): on a long trace a coarse cell would widen the far events over every
    gap between runs, and every cell would fit them all; where the events used do not narrow the
    cells down, events 4 times farther are used, up to all of them. The grid runs on at most
    MAX_FIT_EVENTS events, evenly thinned; the last count, at the best cell's middle, on all."""
    span = max(float(np.abs(u).max()), 1.0)
    reach = max(NEAR_NS, 100 * res) + (window[1] - window[0])
    k_max = MAX_DRIFT_PPM * 1e-6
    win = (window[0] - reach - k_max * span, window[1] + reach + k_max * span)
    lo, hi = -k_max, k_max
    used = 0.0  # the farthest |u| of the events the cells count
    zooms = 0
    while zooms < MAX_ZOOMS:
        cell = (hi - lo) / SLOPES
        ks = lo + cell * (np.arange(SLOPES) + 0.5)
        used = max(used, 2 * max(NEAR_NS, 2 * res) / cell)
        pick = np.flatnonzero(np.abs(u) <= used)
        if pick.size < MIN_EVENTS and used < span:  # few events near the middle (a hole there)
            used *= 4
            continue
        pick = pick[:: -(-pick.size // MAX_FIT_EVENTS)]
        gs, us, vs = g[pick], u[pick], vcpu[pick]
        slack = np.abs(us) * cell / 2
        fits = [_best_ranges(*_shift_ranges(gs + k * us, vs, runs, win, slack)) for k in ks]
        top = max(f for f, _ in fits)
        i = min((i for i, (f, _) in enumerate(fits) if f == top), key=lambda i: abs(ks[i]))
        best = ks[i]
        if not fits[i][1] or cell * span <= max(res, FINE_NS):
            break
        near = [j for j, (f, rs) in enumerate(fits) if rs and f >= top - max(1, top // 500)]
        if (near[-1] - near[0] + 1) >= 0.9 * SLOPES:  # the events used do not narrow the slopes down
            if used >= span:
                break
            used *= 4
            continue
        zooms += 1
        offsets = [r for j in near for r in (fits[j][1][0][0], fits[j][1][-1][1])]
        win = (min(offsets) - cell * span - reach, max(offsets) + cell * span + reach)
        lo, hi = ks[near[0]] - cell / 2, ks[near[-1]] + cell / 2
    fit, ranges = _best_ranges(*_shift_ranges(g + best * u, vcpu, runs, win))
    return fit, float(best), ranges


@dataclass(frozen=True)
class _Line:
    """A guest clock line (host = guest + offset + slope * u), the polygon of lines that fit the
    same events (clock_fit.Polygon) and its slope range: the uncertainty's bounds. The polygon
    counts an event inside any of the runs that lines fitting the other events reach, not only
    the run this line puts it in (see _across_gaps)."""

    offset: float
    slope: float
    n_fit: int
    polygon: Polygon
    slopes: tuple[float, float]


MAX_GAP_ROUNDS = 20  # rounds of _across_gaps at most (each widens at least one event's range)


def _across_gaps(
    lo: np.ndarray,
    hi: np.ndarray,
    u: np.ndarray,
    g: np.ndarray,
    run: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    owner: np.ndarray,
    k_max: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each event's range of shifts widened over the gaps to the neighbouring runs of its vCPU
    that the lines fitting every other event reach.

    The lines that keep every event in some run form several polygons, one per way of placing the
    events in runs: an event near the end of a run may fit just as well at the start of the next
    one, a few ns later, on a line of another slope. The polygon of the runs one line chose would
    then leave out lines that fit every event as well (the true one among them). Widening an
    event's range over the gap to a run that the others let it reach covers both placements (and
    the gap between, a little more than needed); repeated until no event reaches another run.
    starts, ends, owner: every vCPU's runs in one array (owner: the vCPU); run: each event's run."""
    lo, hi = lo.copy(), hi.copy()
    first, last = run.copy(), run.copy()
    for _ in range(MAX_GAP_ROUNDS):
        has_next = (last + 1 < starts.size) & (owner[np.minimum(last + 1, starts.size - 1)] == owner[run])
        has_prev = (first > 0) & (owner[np.maximum(first - 1, 0)] == owner[run])
        above = np.where(has_next, starts[np.minimum(last + 1, starts.size - 1)] - g, np.inf)
        below = np.where(has_prev, ends[np.maximum(first - 1, 0)] - g, -np.inf)
        events, least, most = freed_extents(lo, hi, u, -k_max, k_max, below, above)
        widened = False
        for i, reach_lo, reach_hi in zip(events.tolist(), least.tolist(), most.tolist(), strict=True):
            while (
                last[i] + 1 < starts.size
                and owner[last[i] + 1] == owner[run[i]]
                and starts[last[i] + 1] - g[i] <= reach_hi
            ):
                last[i] += 1
                hi[i] = ends[last[i]] - g[i]
                widened = True
            while (
                first[i] > 0
                and owner[first[i] - 1] == owner[run[i]]
                and ends[first[i] - 1] - g[i] >= reach_lo
            ):
                first[i] -= 1
                lo[i] = starts[first[i]] - g[i]
                widened = True
        if not widened:
            break
    return lo, hi


def _fitted_line(
    g: np.ndarray,
    u: np.ndarray,
    vcpu: np.ndarray,
    runs: dict[int, tuple[np.ndarray, np.ndarray]],
    offset: float,
    slope: float,
    across_gaps: bool = True,
) -> _Line | None:
    """The events inside a run on the line (offset, slope) pin every line that keeps them inside
    runs: a polygon. The line used from it: no shift at all when it fits (one timeline), else no
    drift when some offset fits with none (a drift the events do not show is not assumed), else the
    middle of its slopes; at that slope, the middle of the offsets. across_gaps=False skips widening
    the polygon over the gaps between runs (_across_gaps), for a line that is only a step."""
    vcpus = [c for c in np.unique(vcpu).tolist() if c in runs]
    if not vcpus:
        return None
    starts = np.concatenate([runs[c][0] for c in vcpus])
    ends = np.concatenate([runs[c][1] for c in vcpus])
    base = np.cumsum([0] + [runs[c][0].size for c in vcpus])
    picks, js = [], []
    for n, c in enumerate(vcpus):
        s, e = runs[c]
        pick = np.flatnonzero(vcpu == c)
        x = g[pick] + offset + slope * u[pick]
        j = np.searchsorted(s, x, side="right") - 1
        inside = (j >= 0) & (x <= e[np.maximum(j, 0)])
        picks.append(pick[inside])
        js.append(j[inside] + base[n])
    pick, run = np.concatenate(picks), np.concatenate(js)
    if pick.size == 0:
        return None
    owner = np.repeat(np.arange(len(vcpus)), np.diff(base))
    gs, us = g[pick].astype(np.float64), u[pick]
    lo, hi = starts[run] - gs, ends[run] - gs
    k_max = MAX_DRIFT_PPM * 1e-6
    poly = Polygon.of(lo, hi, us, -k_max, k_max)
    slopes = poly.slopes()
    if slopes is None:  # only when rounding loses a polygon a few ps wide
        return None
    zero = np.zeros(1)
    if poly.lower(zero)[0] <= 0 <= poly.upper(zero)[0]:
        best_offset, best_slope = 0.0, 0.0
    else:
        best_slope = 0.0 if slopes[0] <= 0 <= slopes[1] else (slopes[0] + slopes[1]) / 2
        k = np.array([best_slope])
        best_offset = float(poly.lower(k)[0] + poly.upper(k)[0]) / 2
    if across_gaps:
        poly = Polygon.of(*_across_gaps(lo, hi, us, gs, run, starts, ends, owner, k_max), us, -k_max, k_max)
        slopes = poly.slopes() or slopes
    return _Line(best_offset, best_slope, pick.size, poly, slopes)


def estimate_offset(runs_of_vm: pl.DataFrame, guest_of_vm: pl.DataFrame) -> Estimate | str:
    """The offset (and drift) of one VM's guest clock, or why the events do not settle it.

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
    runs = _runs_by_vcpu(runs_of_vm, res)
    known = np.isin(vcpu, np.array(list(runs), dtype=np.int64))
    g, vcpu = g[known], vcpu[known]
    if g.size < MIN_EVENTS:
        return TOO_FEW
    at = (int(g[0]) + int(g[-1])) // 2  # offsets are those at the middle of the guest's events
    u = (g - at).astype(np.float64)
    longest = max(r[0].size for r in runs.values())
    n_anchors = int(max(4, min(N_ANCHORS, MAX_ANCHOR_ENDPOINTS // max(longest, 1))))
    pick = np.unique(np.linspace(0, g.size - 1, n_anchors).astype(np.int64))
    _, candidates = _best_ranges(*_shift_ranges(g[pick], vcpu[pick], runs, None), kind="stable")
    candidates = candidates[:16]
    scored = [(fit, k, rs) for fit, k, rs in (_fit_slope(g, u, vcpu, runs, c, res) for c in candidates) if rs]
    # A drifting clock spreads anchors far apart in time over different shifts (3 ppm over a 20 s
    # trace: 60 us, more than most runs): where their candidates fit too few events, anchors within
    # the time the largest drift takes to move by NEAR_NS find the offset at `at` whatever the drift.
    middle = np.flatnonzero(np.abs(u) <= NEAR_NS / (MAX_DRIFT_PPM * 1e-6))
    if max((f for f, _, _ in scored), default=0) < MIN_FIT * g.size and MIN_EVENTS <= middle.size < g.size:
        pick = middle[np.unique(np.linspace(0, middle.size - 1, n_anchors).astype(np.int64))]
        _, more = _best_ranges(*_shift_ranges(g[pick], vcpu[pick], runs, None), kind="stable")
        fits = (_fit_slope(g, u, vcpu, runs, c, res) for c in more[:16] if c not in candidates)
        scored += [(fit, k, rs) for fit, k, rs in fits if rs]
    if not scored:
        return "no shift puts the guest events inside their vCPUs' run intervals"
    top = max(f for f, _, _ in scored)
    best = [(k, r) for f, k, rs in scored if f == top for r in rs]
    # no shift at all (host and guest already on one timeline) wins when it fits as well as any,
    # or when it fits nearly every guest event the host recorded around: events after the host
    # stopped recording (or before it started) cannot speak against it, while a distant shift can
    # fit those too by chance
    zero = [(k, r) for k, r in best if k == 0 and r[0] <= 0 <= r[1]]
    if not zero:
        fit0, ranges0 = _best_ranges(*_shift_ranges(g, vcpu, runs, (-NEAR_NS, NEAR_NS)))
        n_span0 = int(np.count_nonzero((g >= span[0]) & (g <= span[1])))
        zero = [(0.0, r) for r in ranges0 if r[0] <= 0 <= r[1]]
        if zero and fit0 >= MIN_EVENTS and fit0 >= MIN_FIT * n_span0:
            top = fit0
        else:
            zero = []
    # candidates that found the same line list its ranges once each
    best = list(dict.fromkeys(zero or best))
    # else a distant shift that fits nearly as many events makes the best one a matter of chance
    # (a candidate that found the same line at a slightly other slope stays within NEAR_NS of it
    # over the whole trace: not a rival)
    ends = float(np.abs(u).max())

    def far(k: float, r: tuple[float, float]) -> bool:
        gap = abs(r[0] - best[0][1][0]) + abs(k - best[0][0]) * ends
        return gap > max(100 * res, NEAR_NS * (k != best[0][0]))

    rivals = [f for f, k, rs in scored if f < top and all(far(k, r) for r in rs)]
    if not zero and rivals and max(rivals) >= top - max(2, top // 100):
        return f"ambiguous: shifts far apart fit {top} and {max(rivals)} guest events"
    lo, hi = min(r[0] for _, r in best), max(r[1] for _, r in best)
    # several shifts fit as well: ambiguous when they are far apart; when they all lie within
    # NEAR_NS the offset is known to that width, and the uncertainty says so. Ranges that all hold
    # 0 (no shift) overlap there, however wide they reach: one timeline, fitted from 0.
    if not zero and len(best) > 1 and hi - lo > max(100 * res, NEAR_NS):
        return f"ambiguous: shifts {int(lo)} and {int(hi)} ns fit the guest events equally well"
    first = (0.0 if zero else (lo + hi) / 2, best[0][0])
    line = _fitted_line(g, u, vcpu, runs, *first, across_gaps=False)
    if line is not None:  # its middle may fit events the grid's line missed: once more from there
        line = _fitted_line(g, u, vcpu, runs, line.offset, line.slope) or _fitted_line(
            g, u, vcpu, runs, *first
        )
    if line is None:
        return "no shift puts the guest events inside their vCPUs' run intervals"
    # events the host did not record around (before its first or after its last event) cannot be
    # checked: the fit is judged on the others
    host = g + line.offset + line.slope * u
    n_span = int(np.count_nonzero((host >= span[0]) & (host <= span[1])))
    if line.n_fit < MIN_EVENTS or line.n_fit < MIN_FIT * n_span:
        return (
            f"no shift puts {MIN_FIT:.0%} of the guest events inside their vCPUs' run intervals "
            f"(best: {line.n_fit} of {n_span})"
        )
    return _estimate(line, at, (float(u.min()), float(u.max())), n_span, res)


def _estimate(line: _Line, at: int, ends: tuple[float, float], n_span: int, res: int) -> Estimate:
    """The Estimate of a fitted line: its offset at `at` (rounded) and slope as a drift, each
    with the distance to the farthest line of its polygon; span_uncertainty_ns at the guest
    events' first and last instants (the farthest a line strays is at an end: the spread of
    offset + slope * u over the polygon is convex in u)."""
    offset = round(line.offset)

    def off_by(u: float, offset: float) -> float:
        least, most = line.polygon.extent(u, line.slopes)
        here = offset + line.slope * u
        return max(here - least, most - here, 0.0)

    # + 1 ns: the applied line is rounded to whole nanoseconds
    uncertainty = int(np.ceil(off_by(0.0, offset))) + 1
    widest = max(uncertainty, *(int(np.ceil(off_by(u, line.offset))) + 1 for u in ends))
    k_lo, k_hi = line.slopes
    return Estimate(
        offset_ns=offset,
        uncertainty_ns=uncertainty,
        n_events=n_span,
        n_fit=line.n_fit,
        resolution_ns=res,
        at_ns=at,
        drift_ppm=float(0.0 - line.slope * 1e6),  # a guest clock running fast gains on the host's
        drift_uncertainty_ppm=float(max(line.slope - k_lo, k_hi - line.slope)) * 1e6,
        span_uncertainty_ns=widest,
    )


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


def outside_runs(
    host: pl.DataFrame, guest: pl.DataFrame, offset_ns: int, drift_ppm: float = 0.0
) -> tuple[int, int]:
    """How many guest events a given clock line (host = guest + offset_ns - drift_ppm * 1e-6 *
    guest) puts outside every run of their vCPU, of how many it puts inside the host trace's time
    range on vCPUs the host ran (the others say nothing). A guest event happens while its vCPU
    runs: a stale or mistyped offset puts many outside, and would join them to the wrong states.

    host: vm, vcpu, kind, ts of one VM's host events (host clock); guest: vcpu, ts (guest clock)."""
    runs = run_intervals(host)
    guest = guest.drop_nulls(["vcpu", "ts"])
    if runs.height == 0 or guest.height == 0:
        return 0, 0
    t0, t1 = int(host["ts"].min()), int(host["ts"].max())
    g = guest["ts"].to_numpy().astype(np.int64)
    on_host = g + offset_ns - np.rint(drift_ppm * 1e-6 * g).astype(np.int64)
    vcpu = guest["vcpu"].to_numpy().astype(np.int64)
    # each side may print whole microseconds, cut on its own clock
    res = 2 * max(resolution(guest["ts"]), resolution(host["ts"]))
    n_out = n_checked = 0
    for c, (starts, ends) in _runs_by_vcpu(runs, res).items():
        mine = on_host[(vcpu == c) & (on_host >= t0) & (on_host <= t1)]
        i = np.searchsorted(starts, mine, side="right") - 1
        inside = (i >= 0) & (mine <= ends[np.maximum(i, 0)])
        n_checked += mine.size
        n_out += int(np.count_nonzero(~inside))
    return n_out, n_checked


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
