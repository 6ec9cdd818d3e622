"""Guest spinlock algorithms as traits, and the state of one lock.

The engine asks a lock's traits, not its name, what to do:
- fifo: waiters are granted in arrival order (ticket, MCS queue); otherwise any
  running spinner may take a free lock (test-and-set);
- pv: a waiter halts after spinning `spin_threshold_ns` and the unlocker kicks
  the next owner when it is halted (Linux pv ticketlocks / pv qspinlock);
- steal: a vCPU entering the slow path may take a free lock while the queue
  head is not spinning for it (pv qspinlock's hybrid unfair trylock);
- early_halt: a queued waiter halts at once when its predecessor in the queue
  is halted (pv qspinlock's pv_wait_early).
Native qspinlock hands over like a ticket lock (FIFO; a free lock with an empty
queue is taken on the fast path), and virt-tas (the test-and-set fallback a
guest without pv spinlocks uses) behaves as tas: both pairs differ in the
kernel in cache behaviour, which this model does not represent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    """What a lock algorithm does, as the engine needs it."""

    name: str
    fifo: bool
    pv: bool
    steal: bool
    early_halt: bool

    @property
    def kind(self) -> str:
        """The lock kind of METRICS.md: fifo or unfair."""
        return "fifo" if self.fifo else "unfair"


ALGORITHM_TRAITS: dict[str, Algorithm] = {
    "tas": Algorithm("tas", fifo=False, pv=False, steal=False, early_halt=False),
    "virt-tas": Algorithm("virt-tas", fifo=False, pv=False, steal=False, early_halt=False),
    "ticket": Algorithm("ticket", fifo=True, pv=False, steal=False, early_halt=False),
    "qspinlock": Algorithm("qspinlock", fifo=True, pv=False, steal=False, early_halt=False),
    "pv-ticket": Algorithm("pv-ticket", fifo=True, pv=True, steal=False, early_halt=False),
    "pv-qspinlock": Algorithm("pv-qspinlock", fifo=True, pv=True, steal=True, early_halt=True),
}


class LockState:
    """One lock of one VM: who holds it and who waits, in arrival order.

    `n_release` counts releases (a waiter that queued before the latest one is
    handed the lock) and `last_release_t` is the latest one's time; `book` is the
    lock's ground-truth ledger.
    """

    __slots__ = ("book", "holder", "index", "last_release_t", "n_release", "vm", "waiters")

    def __init__(self, vm: int, index: int):
        self.vm = vm
        self.index = index
        self.holder = None
        self.waiters: list = []
        self.n_release = 0
        self.last_release_t = 0
        self.book = None
