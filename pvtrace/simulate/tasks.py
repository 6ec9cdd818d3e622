"""The host's schedulable tasks: vCPU threads and background noise tasks.

Plain slotted records; the engine owns every transition. A vCPU's `state` is
the METRICS.md state (running, preempted, halted) and `phase` what its guest
is doing (computing, holding a lock, waiting for one, done). Every task carries
its fair-scheduler accounting: `vrt` (virtual runtime, ns of CPU charged),
`deadline` (virtual deadline of its current request) and `vlag` (lag kept
across a sleep).
"""

from __future__ import annotations

RUNNING, PREEMPTED, HALTED = 0, 1, 2
STATE_NAMES = ("running", "preempted", "halted")

COMPUTE, HOLD, WAIT, DONE, IPI = 0, 1, 2, 3, 4  # IPI: waiting for a TLB shootdown's targets (ipis.py)


class VCpu:
    """One vCPU thread of one VM."""

    __slots__ = (
        "comp",
        "contend_rel",
        "cpu_ns",
        "deadline",
        "due",
        "dy_eligible",
        "entering",
        "extended",
        "gid",
        "halt_left",
        "halt_t",
        "halted_phase",
        "hold",
        "hold_lock",
        "i",
        "idx",
        "in_guest",
        "in_kernel",
        "ipi_due",
        "ipi_in",
        "ipi_tok",
        "ipi_wait",
        "ipis",
        "is_vcpu",
        "key",
        "kick_pending",
        "last_pcpu",
        "left",
        "lk",
        "locks",
        "n_done",
        "off_t",
        "ops_total",
        "pcpu",
        "phase",
        "ple_left",
        "poll_ns",
        "polling",
        "seg_start",
        "sleep_due",
        "sleeps",
        "spin_loop",
        "state",
        "state_ns",
        "state_t",
        "stream",
        "token",
        "vlag",
        "vm",
        "vmrec",
        "vrt",
        "wait_lock",
        "window",
        "yield_left",
        "yield_target",
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
        self.off_t = 0  # when it last left a pCPU (cache-hot for a while after: balance.py)
        self.in_guest = False
        self.entering = False  # kvm_entry traced, the guest not yet running (VM entry)
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
        self.vrt = 0
        self.cpu_ns = 0  # host CPU time charged (guest code, exits, halt-polling)
        self.deadline = 0
        self.vlag = 0
        self.polling = False  # halted, its thread halt-polling on its pCPU
        self.poll_ns = 0  # this vCPU's halt_poll_ns (KVM: per vCPU, grown and shrunk)
        self.kick_pending = False  # kicked, the wake-up on its way
        self.halt_t = 0
        self.yield_target = None
        self.sleeps: list[int] | None = None  # blocking sleep after each operation (0: none)
        self.sleep_due = 0  # a blocking sleep to take before the next compute
        self.in_kernel = False  # preempted in guest kernel mode (KVM's preempted_in_kernel)
        self.ipis: list[bool] | None = None  # a TLB shootdown after each operation (None: never)
        self.ipi_due = False  # a shootdown to send before the next compute
        self.ipi_in: list = []  # shootdowns this vCPU has still to handle
        self.ipi_tok = 0
        self.ipi_wait = None  # the shootdown this vCPU waits for


class Noise:
    """A host background task: runs a burst, sleeps, repeats (no events of its own)."""

    __slots__ = (
        "cpu_ns",
        "deadline",
        "due",
        "idx",
        "is_vcpu",
        "last_pcpu",
        "left",
        "off_t",
        "pcpu",
        "polling",
        "token",
        "vlag",
        "vrt",
    )

    def __init__(self, idx: int):
        self.is_vcpu = False
        self.polling = False
        self.vrt = 0
        self.cpu_ns = 0
        self.deadline = 0
        self.vlag = 0
        self.idx = idx
        self.left = 0
        self.due = 0
        self.pcpu = -1
        self.last_pcpu = -1
        self.off_t = 0
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
