"""Guest workload: each vCPU's stream of (compute, lock, hold, sleep, TLB shootdown) operations.

Every vCPU draws from its own generator, seeded by (seed, vm, vcpu), in blocks
of a fixed size. The values a vCPU uses therefore do not depend on how the
engine interleaves vCPUs, and drawing in bulk keeps random numbers off the
engine's hot path.
"""

from __future__ import annotations

import math

import numpy as np

from pvtrace.simulate.scenario import Vm

BLOCK = 2048


def draw_ns(rng: np.random.Generator, dist: str, mean: int, sigma: float, size: int) -> np.ndarray:
    """Durations in integer ns (>= 1) with the given mean."""
    if dist == "fixed":
        x = np.full(size, float(mean))
    elif dist == "exp":
        x = rng.exponential(mean, size)
    elif dist == "uniform":
        x = rng.uniform(0.0, 2.0 * mean, size)
    elif dist == "lognormal":
        x = rng.lognormal(math.log(mean) - sigma * sigma / 2.0, sigma, size)
    else:  # validated in scenario; a new distribution needs a branch here
        raise AssertionError(dist)
    return np.maximum(np.rint(x), 1).astype(np.int64)


def lock_weights(n_locks: int, skew: float) -> np.ndarray:
    """Zipf-like lock popularity: lock k chosen with weight 1/(k+1)^skew (skew 0: uniform)."""
    w = 1.0 / np.arange(1, n_locks + 1, dtype=float) ** skew
    return w / w.sum()


class OpStream:
    """One vCPU's operations, refilled a block at a time."""

    __slots__ = ("_cdf", "_ipi_rng", "_rng", "_sleep_rng", "_vm")

    def __init__(self, vm: Vm, seed: int, vm_index: int, vcpu: int):
        self._vm = vm
        self._rng = np.random.default_rng([seed, vm_index, vcpu, 0x5EED])
        # sleeps from their own generator: a workload without them draws exactly what it did before
        self._sleep_rng = np.random.default_rng([seed, vm_index, vcpu, 0x51EE9]) if vm.sleep_prob else None
        self._ipi_rng = np.random.default_rng([seed, vm_index, vcpu, 0x1F1]) if vm.ipi_prob else None
        self._cdf = np.cumsum(lock_weights(vm.locks, vm.lock_skew))

    def sleeps(self) -> list[int] | None:
        """The next BLOCK blocking sleeps after each operation (0: none), or None without sleeps."""
        rng, vm = self._sleep_rng, self._vm
        if rng is None:
            return None
        ns = draw_ns(rng, "exp", vm.sleep_ns, 1.0, BLOCK)
        return np.where(rng.random(BLOCK) < vm.sleep_prob, ns, 0).tolist()

    def ipis(self) -> list[bool] | None:
        """Whether each of the next BLOCK operations ends in a TLB shootdown, or None without them."""
        rng = self._ipi_rng
        if rng is None:
            return None
        return (rng.random(BLOCK) < self._vm.ipi_prob).tolist()

    def block(self) -> tuple[list[int], list[int], list[int]]:
        """The next BLOCK operations as (compute_ns, lock index, hold_ns) lists."""
        vm, rng = self._vm, self._rng
        compute = draw_ns(rng, vm.compute_dist, vm.compute_ns, vm.compute_sigma, BLOCK)
        locks = np.searchsorted(self._cdf, rng.random(BLOCK), side="right")
        np.minimum(locks, vm.locks - 1, out=locks)
        hold = np.minimum(draw_ns(rng, vm.hold_dist, vm.hold_ns, vm.hold_sigma, BLOCK), vm.hold_max_ns)
        return compute.tolist(), locks.tolist(), hold.tolist()
