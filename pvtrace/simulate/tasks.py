"""The host's schedulable tasks: vCPU threads and background noise tasks.

Plain slotted records; the engine owns every transition. A vCPU's `state` is
the METRICS.md state (running, preempted, halted) and `phase` what its guest
is doing (computing, holding a lock, waiting for one, done).
"""

from __future__ import annotations

RUNNING, PREEMPTED, HALTED = 0, 1, 2
STATE_NAMES = ("running", "preempted", "halted")

COMPUTE, HOLD, WAIT, DONE = 0, 1, 2, 3


class VCpu:
    """One vCPU thread of one VM."""

    __slots__ = (
        "comp",
        "contend_rel",
        "due",
        "dy_eligible",
        "extended",
        "gid",
        "halt_left",
        "halted_phase",
        "hold",
        "hold_lock",
        "i",
        "idx",
        "in_guest",
        "is_vcpu",
        "key",
        "last_pcpu",
        "left",
        "lk",
        "locks",
        "n_done",
        "ops_total",
        "pcpu",
        "phase",
        "ple_left",
        "seg_start",
        "spin_loop",
        "state",
        "state_ns",
        "state_t",
        "stream",
        "token",
        "vm",
        "vmrec",
        "wait_lock",
        "window",
        "yield_left",
    )

    def __init__(self, gid: int, vm: int, idx: int, key: int):
        self.is_vcpu = True
        self.gid = gid
        self.vm = vm
        self.idx = idx
        self.key = key
        self.vmrec = None
        self.state = PREEMPTED
        self.state_t = 0
        self.state_ns = [0, 0, 0]
        self.pcpu = -1
        self.last_pcpu = -1
        self.in_guest = False
        self.phase = COMPUTE
        self.left = 0
        self.due = 0
        self.token = 0
        self.stream = None
        self.comp: list[int] = []
        self.lk: list[int] = []
        self.hold: list[int] = []
        self.i = 0
        self.ops_total = -1  # operations to do; -1: no end (fixed-duration runs)
        self.n_done = 0
        self.locks: list = []
        self.wait_lock = None
        self.hold_lock = None
        self.contend_rel = 0
        self.seg_start = 0
        self.halt_left = 0
        self.yield_left = 0
        self.ple_left = 0
        self.halted_phase = False
        self.dy_eligible = False
        self.spin_loop = False
        self.window = 0
        self.extended = False


class Noise:
    """A host background task: runs a burst, sleeps, repeats (no events of its own)."""

    __slots__ = ("due", "idx", "is_vcpu", "last_pcpu", "left", "pcpu", "token")

    def __init__(self, idx: int):
        self.is_vcpu = False
        self.idx = idx
        self.left = 0
        self.due = 0
        self.pcpu = -1
        self.last_pcpu = -1
        self.token = 0


class VmRec:
    """Per-VM bookkeeping: its vCPUs, locks, completion and directed-yield cursor."""

    __slots__ = ("done_t", "index", "last_boosted", "locks", "n_done", "name", "vcpus")

    def __init__(self, index: int, name: str):
        self.index = index
        self.name = name
        self.vcpus: list[VCpu] = []
        self.locks: list = []
        self.n_done = 0
        self.done_t: int | None = None
        self.last_boosted = -1
