"""Guest spinlock algorithms as composable traits, and the state of one lock.

The engine asks a lock's traits, not its name, what to do:
- order `fifo`: waiters are granted in arrival order (ticket, MCS queue);
  `unfair`: any running spinner may take a free lock (test-and-set);
- pv: a waiter halts after spinning `spin_threshold_ns` (SPIN_THRESHOLD loops)
  and is kicked when the lock is its (Linux pv ticketlocks / pv qspinlock);
- stealing `none`; `once`: a vCPU entering the slow path may take a free lock
  while the queue head is not spinning for it (pv qspinlock's
  pv_hybrid_queued_unfair_trylock); `unfair`: the unfair queued lock, whose
  queue head is preferred at a release but any arriving or spinning vCPU takes
  a free lock, so a preempted queue member does not stall the others (its lock
  kind is unfair);
- early_halt `never`; `pred-halted`: a queued waiter halts early when its
  predecessor has halted (pv_wait_early, current kernels); `pred-preempted`:
  also when the predecessor is merely preempted (the one release that read
  vcpu_is_preempted there); checked every PV_PREV_CHECK_MASK + 1 = 256 loops;
- kick `unlock`: the unlocker kicks the halted next owner (pv ticket; pv
  qspinlock hashes the lock when the head halts and the unlocker kicks);
  `hash`: a halted waiter is kicked as soon as it becomes queue head
  (pv_kick_node at the MCS hand-off, as Linux 4.2 did) and again by the
  unlocker if it halted since.
Named algorithms are presets of traits; `[lock]` keys override single traits.
Native qspinlock hands over like a ticket lock, and virt-tas (the test-and-set
fallback of a guest without pv spinlocks) behaves as tas: both pairs differ in
the kernel in cache behaviour, which this model does not represent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ORDERS = ("fifo", "unfair")
STEALING = ("none", "once", "unfair")
EARLY_HALT = ("never", "pred-halted", "pred-preempted")
KICKS = ("unlock", "hash")
SPIN_THRESHOLD_LOOPS = 1 << 15  # SPIN_THRESHOLD
PREV_CHECK_LOOPS = 256  # PV_PREV_CHECK_MASK + 1


@dataclass(frozen=True)
class Algorithm:
    """What a lock algorithm does, as the engine needs it."""

    name: str
    order: str = "fifo"
    pv: bool = False
    stealing: str = "none"
    early_halt: str = "never"
    kick: str = "unlock"

    @property
    def fifo(self) -> bool:
        """Are grants in arrival order (the fifo kind of METRICS.md)?"""
        return self.order == "fifo" and self.stealing != "unfair"

    @property
    def head_first(self) -> bool:
        """The unfair queued lock: a release prefers the running queue head."""
        return self.order == "fifo" and self.stealing == "unfair"

    @property
    def steal(self) -> bool:
        """One lock-steal attempt at slow-path entry."""
        return self.stealing == "once" and self.fifo

    @property
    def kind(self) -> str:
        """The lock kind of METRICS.md: fifo or unfair."""
        return "fifo" if self.fifo else "unfair"


ALGORITHM_TRAITS: dict[str, Algorithm] = {
    "tas": Algorithm("tas", order="unfair"),
    "virt-tas": Algorithm("virt-tas", order="unfair"),
    "ticket": Algorithm("ticket"),
    "qspinlock": Algorithm("qspinlock"),
    "unfair-queued": Algorithm("unfair-queued", stealing="unfair"),
    "pv-ticket": Algorithm("pv-ticket", pv=True),
    "pv-qspinlock": Algorithm("pv-qspinlock", pv=True, stealing="once", early_halt="pred-halted"),
}

# [lock] keys that override one trait of the named algorithm ("" keeps the algorithm's).
TRAIT_KEYS = {
    "order": ORDERS,
    "pv": ("on", "off"),
    "stealing": STEALING,
    "early_halt": EARLY_HALT,
    "kick": KICKS,
}


def algorithm_of(lock) -> Algorithm:
    """The traits a scenario's [lock] section asks for: its algorithm's, with overrides."""
    algo = ALGORITHM_TRAITS[lock.algorithm]
    changes = {}
    for key in TRAIT_KEYS:
        value = getattr(lock, key)
        if value:
            changes[key] = value == "on" if key == "pv" else value
    return replace(algo, **changes) if changes else algo


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
