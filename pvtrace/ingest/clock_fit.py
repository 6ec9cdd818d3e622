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


def _edge_lines(a: np.ndarray, u: np.ndarray, k0: float, k1: float) -> tuple[np.ndarray, np.ndarray]:
    """The lines a - k u that can reach max_i(a_i - k u_i) for some k in [k0, k1]: those no other
    line beats at both k0 and k1 (a sort and a running maximum)."""
    v0, v1 = a - k0 * u, a - k1 * u
    order = np.lexsort((-v1, -v0))  # by value at k0, highest first (ties: highest at k1 first)
    best_before = np.maximum.accumulate(np.concatenate([[-np.inf], v1[order][:-1]]))
    keep = order[v1[order] > best_before]
    return a[keep], u[keep]


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
        lo_a, lo_u = _edge_lines(lo, u, k_min, k_max)
        neg_a, neg_u = _edge_lines(-hi, -u, k_min, k_max)  # min(hi - k u) = -max(-hi + k u)
        return cls(lo_a, lo_u, -neg_a, -neg_u, k_min, k_max)

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
