"""A fake tracefs and a fake /proc: the files and contents a kernel offers, in a temp dir.

FakeKernel emulates what the kernel does on its own: mkdir under instances/
builds a whole instance tree (tracing_on on, its own buffer size, events,
per-CPU stats and a `trace` file holding what the "kernel" recorded), and
rmdir removes it. Everything else is plain files that pvtrace reads and writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pvtrace.record.tracefs import Tracefs

TRIGGER_HELP = "# Available triggers:\n# traceon traceoff stacktrace enable_event disable_event\n"
TRACE_HEADER = """# tracer: nop
#
# entries-in-buffer/entries-written: {n}/{n}   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""

HOST_EVENTS = [
    "kvm:kvm_exit",
    "kvm:kvm_entry",
    "kvm:kvm_hypercall",
    "kvm:kvm_vcpu_wakeup",
    "kvm:kvm_ple_window_update",
    "sched:sched_switch",
    "sched:sched_wakeup",
    "sched:sched_waking",
    "irq:irq_handler_entry",
    "irq:irq_handler_exit",
]
GUEST_EVENTS = [
    "lock:contention_begin",
    "lock:contention_end",
    "sched:sched_switch",
    "sched:sched_wakeup",
    "sched:sched_waking",
    "irq_vectors:local_timer_entry",
]

# Host-side lines in the kernel's print formats (kvm_exit as VMX prints it).
HOST_LINES = [
    "       CPU 0/KVM-4243    [001] d..1.   100.000100: kvm_exit: vcpu 0 reason PAUSE_INSTRUCTION rip 0xffffffff81a3c2d5 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000",
    "       CPU 0/KVM-4243    [001] d..1.   100.000104: kvm_ple_window_update: vcpu 0 old 4096 new 8192 (growed)",
    "       CPU 0/KVM-4243    [001] d..1.   100.000105: kvm_entry: vcpu 0, rip 0xffffffff81a3c2d5 intr_info 0x00000000 error_code 0x00000000",
    "       CPU 1/KVM-4244    [000] d..1.   100.000200: kvm_exit: vcpu 1 reason VMCALL rip 0xffffffff8107a1e9 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000 requests 0x0000000000000000",
    "       CPU 1/KVM-4244    [000] ....1   100.000201: kvm_hypercall: nr 0x5 a0 0x0 a1 0x0 a2 0x0 a3 0x0",
    "       CPU 1/KVM-4244    [000] d..1.   100.000203: kvm_entry: vcpu 1, rip 0xffffffff8107a1ec intr_info 0x00000000 error_code 0x00000000",
    "       CPU 1/KVM-4244    [000] d..2.   100.000300: sched_switch: prev_comm=CPU 1/KVM prev_pid=4244 prev_prio=120 prev_state=R+ ==> next_comm=stress next_pid=900 next_prio=120",
    "          stress-900     [000] d..2.   100.000900: sched_switch: prev_comm=stress prev_pid=900 prev_prio=120 prev_state=R+ ==> next_comm=CPU 1/KVM next_pid=4244 next_prio=120",
]


def ftrace_text(lines: list[str]) -> str:
    return TRACE_HEADER.format(n=len(lines)) + "".join(line + "\n" for line in lines)


def stats_text(entries: int = 0, overrun: int = 0, dropped: int = 0) -> str:
    return (
        f"entries: {entries}\noverrun: {overrun}\ncommit overrun: 0\nbytes: {entries * 32}\n"
        f"oldest event ts:   100.000100\nnow ts:   101.000000\ndropped events: {dropped}\nread events: 0\n"
    )


class FakeKernel:
    """A tracefs tree under `root` that behaves like the kernel for what pvtrace touches."""

    def __init__(
        self,
        root: Path,
        events: list[str],
        *,
        n_cpus: int = 2,
        trace: str = "",
        stats: dict[int, str] | None = None,
        triggers: bool = True,
    ):
        self.root = root
        self.events = events
        self.n_cpus = n_cpus
        self.trace = trace
        self.stats = stats or {}
        self.triggers = triggers
        self.instances_made: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        (root / "available_events").write_text("".join(e + "\n" for e in events))
        (root / "instances").mkdir()
        self._fill(root, top=True)

    def _fill(self, where: Path, top: bool) -> None:
        files = {
            "tracing_on": "1\n",
            "buffer_size_kb": "7 (expanded: 1408)\n" if top else "1410\n",
            "current_tracer": "nop\n",
            "trace_clock": "[local] global counter uptime perf mono mono_raw boot x86-tsc\n",
            "set_event": "",
            "trace": self.trace if not top else ftrace_text([]),
        }
        for name, text in files.items():
            (where / name).write_text(text)
        for cpu in range(self.n_cpus):
            d = where / "per_cpu" / f"cpu{cpu}"
            d.mkdir(parents=True)
            (d / "stats").write_text(self.stats.get(cpu, stats_text()) if not top else stats_text())
            (d / "trace_pipe_raw").write_bytes(b"")
        (where / "events").mkdir()
        (where / "events" / "enable").write_text("0\n")
        for event in self.events:
            system, _, name = event.partition(":")
            d = where / "events" / system / name
            d.mkdir(parents=True)
            (d / "enable").write_text("0\n")
            (d / "filter").write_text("none\n")
            (d / "trigger").write_text(TRIGGER_HELP if self.triggers else "")

    def mkdir(self, path: Path) -> None:
        if path.parent == self.root / "instances":
            path.mkdir()
            self._fill(path, top=False)
            self.instances_made.append(path.name)
        else:
            path.mkdir()

    def rmdir(self, path: Path) -> None:
        if path.parent == self.root / "instances":
            shutil.rmtree(path)
        else:
            path.rmdir()

    def tracefs(self) -> Tracefs:
        return Tracefs(self.root, make_dir=self.mkdir, remove_dir=self.rmdir)

    def instances(self) -> list[str]:
        return sorted(p.name for p in (self.root / "instances").iterdir())

    def top_level(self) -> dict[str, str]:
        """Every top-level file and its content (what pvtrace must never change)."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root)
            if rel.parts[0] != "instances" and p.is_file():
                out[str(rel)] = p.read_text()
        return out


def make_proc(root: Path, *, hypervisor: bool = False, qemus: list[dict] | None = None) -> Path:
    """A fake /proc: cpuinfo, cmdline, meminfo, stat, and QEMU processes with their threads."""
    root.mkdir(parents=True, exist_ok=True)
    flags = "fpu vme de pse tsc msr pae" + (" hypervisor" if hypervisor else "")
    (root / "cpuinfo").write_text(
        f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    )
    (root / "cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/vda ro\n")
    (root / "meminfo").write_text("MemTotal:       32000000 kB\nMemAvailable:   16000000 kB\n")
    (root / "stat").write_text("cpu  10 0 20 300 0 0 0 7 0 0\ncpu0 5 0 10 150 0 0 0 3 0 0\n")
    (root / "self").mkdir(exist_ok=True)
    bash = root / "77"
    (bash / "task" / "77").mkdir(parents=True)
    (bash / "comm").write_text("bash\n")
    (bash / "task" / "77" / "comm").write_text("bash\n")
    for q in qemus or []:
        pdir = root / str(q["pid"])
        pdir.mkdir()
        (pdir / "comm").write_text(q.get("comm", "qemu-system-x86") + "\n")
        (pdir / "cmdline").write_text("\0".join(q.get("args", ["qemu-system-x86_64"])) + "\0")
        for tid, comm in q["threads"].items():
            (pdir / "task" / str(tid)).mkdir(parents=True)
            (pdir / "task" / str(tid) / "comm").write_text(comm + "\n")
    return root


QEMU_A = {
    "pid": 4242,
    "args": ["qemu-system-x86_64", "-name", "guest=vmA,debug-threads=on", "-smp", "2"],
    "threads": {4242: "qemu-system-x86", 4243: "CPU 0/KVM", 4244: "CPU 1/KVM", 4245: "IO mon_iothread"},
}
QEMU_B = {
    "pid": 5000,
    "args": ["/usr/bin/qemu-system-x86_64", "-enable-kvm", "-name", "vmB"],
    "threads": {5000: "qemu-system-x86", 5003: "CPU 0/KVM"},
}
QEMU_NO_NAMES = {
    "pid": 6000,
    "comm": "qemu-kvm",
    "args": ["qemu-kvm", "-m", "1G"],
    "threads": {6000: "qemu-kvm", 6001: "qemu-kvm"},
}
