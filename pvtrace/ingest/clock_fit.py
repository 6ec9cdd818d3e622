"""The (offset, slope) pairs of a guest clock that keep every guest event inside its vCPU run.

host = guest + offset + slope * (guest - at): once each event's run is known, event i allows
lo_i <= offset + slope * u_i <= hi_i (u_i: its guest time - at), a strip of the (offset, slope)
plane, and the pairs every event allows are the strips' intersection, a convex polygon. Its
lower edge L(slope) = max(lo_i - slope * u_i) is convex and its upper edge U(slope) = min(hi_i -
slope * u_i) concave, so the slopes with L <= U form one interval, and every extreme of the
polygon (the offsets it allows at a time u, the slopes) is the peak of a concave function of the
slope: found by evaluating a grid of slopes at once and zooming in, a few dozen vectorized passes.
Before that, the lines that can never be an edge are dropped (a line below another one at both
ends of the slope range is below it in between): what remains is small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GRID = 65  # slopes evaluated per zoom step
ZOOMS = 8  # zoom steps: the bracket shrinks 32-fold per step, to 1e-16 of +-100 ppm


def _edge_index(a: np.ndarray, u: np.ndarray, k0: float, k1: float) -> np.ndarray:
    """Which lines a - k u can reach max_i(a_i - k u_i) for some k in [k0, k1]: those no other
    line beats at both k0 and k1 (a sort and a running maximum), among the lines that reach the
    upper envelope of the two highest at k0 and at k1 (a line below it everywhere is below the
    whole envelope; it is below it everywhere when below it at k0, k1 and where the two cross)."""
    v0, v1 = a - k0 * u, a - k1 * u
    i, j = int(np.argmax(v0)), int(np.argmax(v1))
    ks = [k0, k1]
    if u[i] != u[j]:  # where line i (highest at k0) and line j (at k1) cross
        ks.append(min(max((a[i] - a[j]) / (u[i] - u[j]), k0), k1))
    reach = np.zeros(a.size, dtype=bool)
    for k in ks:  # a little slack: keeping a line too many is harmless, one too few is not
        top = max(a[i] - k * u[i], a[j] - k * u[j])
        reach |= a - k * u >= top - 1e-3 - 1e-12 * abs(top)
    keep = np.flatnonzero(reach)
    w0, w1 = v0[keep], v1[keep]
    order = np.lexsort((-w1, -w0))  # by value at k0, highest first (ties: highest at k1 first)
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], w1[order][:-1]]))
    return keep[order[w1[order] > best_before]]


def _peak(f: Callable[[np.ndarray], np.ndarray], k0: float, k1: float) -> tuple[float, float]:
    """The slope in [k0, k1] where a concave f (evaluated on an array of slopes) peaks, and f there."""
    for _ in range(ZOOMS):
        ks = np.linspace(k0, k1, GRID)
        i = int(np.argmax(f(ks)))
        k0, k1 = ks[max(i - 1, 0)], ks[min(i + 1, GRID - 1)]
    k = (k0 + k1) / 2
    return k, float(f(np.array([k]))[0])


def _crossing(f: Callable[[np.ndarray], np.ndarray], inside: float, outside: float) -> float:
    """Where f (>= 0 at `inside`, < 0 at `outside`, monotone between them) turns negative, from the
    inside (the returned slope keeps f >= 0 up to rounding)."""
    for _ in range(ZOOMS):
        ks = np.linspace(inside, outside, GRID)
        i = int(np.argmax(f(ks) < 0))  # the first slope outside
        inside, outside = ks[i - 1], ks[i]
    return inside


@dataclass(frozen=True)
class Polygon:
    """The (offset, slope) pairs inside every strip lo <= offset + slope * u <= hi, for slopes in
    [k_min, k_max] (the drift a clock may have at most)."""

    lo_a: np.ndarray
    lo_u: np.ndarray
    hi_a: np.ndarray
    hi_u: np.ndarray
    k_min: float
    k_max: float

    @classmethod
    def of(cls, lo: np.ndarray, hi: np.ndarray, u: np.ndarray, k_min: float, k_max: float) -> Polygon:
        low = _edge_index(lo, u, k_min, k_max)
        high = _edge_index(-hi, -u, k_min, k_max)  # min(hi - k u) = -max(-hi + k u)
        return cls(lo[low], u[low], hi[high], u[high], k_min, k_max)

    def lower(self, ks: np.ndarray) -> np.ndarray:
        """L(k): the least offset the events allow at each slope."""
        return np.max(self.lo_a[None, :] - ks[:, None] * self.lo_u[None, :], axis=1)

    def upper(self, ks: np.ndarray) -> np.ndarray:
        """U(k): the greatest offset the events allow at each slope."""
        return np.min(self.hi_a[None, :] - ks[:, None] * self.hi_u[None, :], axis=1)

    def slopes(self) -> tuple[float, float] | None:
        """The slopes at which some offset fits every event, or None when none does."""

        def width(ks: np.ndarray) -> np.ndarray:
            return self.upper(ks) - self.lower(ks)

        k, w = _peak(width, self.k_min, self.k_max)
        if w < 0:
            return None
        k_lo = self.k_min if width(np.array([self.k_min]))[0] >= 0 else _crossing(width, k, self.k_min)
        k_hi = self.k_max if width(np.array([self.k_max]))[0] >= 0 else _crossing(width, k, self.k_max)
        return k_lo, k_hi

    def extent(self, u: float, slopes: tuple[float, float]) -> tuple[float, float]:
        """The least and greatest offset + slope * u over the polygon (slopes: its slope range):
        the host time a guest event at u may have, less its guest time."""
        _, top = _peak(lambda ks: self.upper(ks) + ks * u, *slopes)
        _, neg_bottom = _peak(lambda ks: -(self.lower(ks) + ks * u), *slopes)
        return -neg_bottom, top


def _near(
    lo: np.ndarray, hi: np.ndarray, u: np.ndarray, around: tuple[float, float], k_min: float, k_max: float
) -> tuple[Polygon, tuple[float, float]]:
    """The polygon of these strips and its slopes, for a polygon that holds the slopes `around`:
    computed over a window of slopes about them, widened 4-fold until the polygon ends inside it
    (a convex polygon that does not reach the ends of a window has no part beyond it). Over a
    narrow window few lines can be edges, so this is cheaper than the whole range at once."""
    reach = max(around[1] - around[0], 1e-12)
    while True:
        ks = (max(around[0] - reach, k_min), min(around[1] + reach, k_max))
        poly = Polygon.of(lo, hi, u, *ks)
        slopes = poly.slopes() or around  # None only when rounding loses it: it holds `around`
        if (slopes[0] > ks[0] or ks[0] == k_min) and (slopes[1] < ks[1] or ks[1] == k_max):
            return poly, slopes
        reach *= 4


def freed_extents(
    lo: np.ndarray,
    hi: np.ndarray,
    u: np.ndarray,
    k_min: float,
    k_max: float,
    below: np.ndarray,
    above: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each event whose strip bounds the polygon (dropping any other leaves it as it is) and
    that the others might let reach `below` or `above` (per event; -inf / inf: nothing there): the
    least and greatest offset + slope * u_i over the polygon of all the other events, i.e. how far
    those others would let event i move. Returns (events, least, most).

    Without all of those events at once the polygon reaches at least as far as without any one:
    the events it does not let reach below or above are left out first."""
    none = np.empty(0, np.int64), np.empty(0), np.empty(0)
    if lo.size < 2:  # one event alone: nothing else bounds it
        return none
    full = Polygon.of(lo, hi, u, k_min, k_max).slopes()
    if full is None:
        return none
    events = np.union1d(_edge_index(lo, u, *full), _edge_index(-hi, -u, *full))
    rest = np.setdiff1d(np.arange(lo.size), events, assume_unique=True)
    if rest.size:
        loose, slopes = _near(lo[rest], hi[rest], u[rest], full, k_min, k_max)
        reach = np.array([loose.extent(float(u[i]), slopes) for i in events.tolist()]).reshape(-1, 2)
        events = events[(reach[:, 0] <= below[events]) | (reach[:, 1] >= above[events])]
    least, most = np.empty(events.size), np.empty(events.size)
    for n, i in enumerate(events.tolist()):
        keep = np.arange(lo.size) != i
        others, slopes = _near(lo[keep], hi[keep], u[keep], full, k_min, k_max)
        least[n], most[n] = others.extent(float(u[i]), slopes)
    return events, least, most
