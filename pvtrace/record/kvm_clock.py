"""Each VM's guest clock against the host's, read from KVM's debugfs while a host trace is recorded.

KVM gives every vCPU a TSC offset (and, on hosts with TSC scaling, a ratio): the guest reads
`guest_tsc = host_tsc * ratio / 2**frac_bits + tsc_offset`. It shows them per vCPU in
`/sys/kernel/debug/kvm/<pid>-<fd>/vcpu<N>/tsc-offset`, `tsc-scaling-ratio` and
`tsc-scaling-ratio-frac-bits` (arch/x86/kvm/debugfs.c); trace-cmd's `kvm` tsync reads the same
files. The offset relates the two sides' *TSC* readings, so it aligns host and guest traces only
when both are recorded on the `x86-tsc` trace clock: then `host = guest - tsc_offset` in the
traces' own (cycle) units. On any other clock (`local`, the default, counts ns from each
kernel's own boot) the offsets are kept in record.json for the record, and no side file is
written: a wrong offset would be worse than none (analyze then estimates it from the events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pvtrace.ingest.offsets_file import offsets_path, write_offsets
from pvtrace.outputs import atomic_file

DEBUGFS_KVM = Path("/sys/kernel/debug/kvm")
TSC_CLOCK = "x86-tsc"
_VM_DIR = re.compile(r"^(\d+)-\d+$")
_VCPU_DIR = re.compile(r"^vcpu(\d+)$")

TSC_SCHEMA = pl.Schema(
    {
        "vm": pl.String(),
        "pid": pl.Int32(),
        "vcpu": pl.Int32(),
        "tsc_offset": pl.Int64(),
        "scaling_ratio": pl.UInt64(),
        "frac_bits": pl.Int32(),
    }
)


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_tsc_offsets(vm_of_pid: dict[int, str], root: Path = DEBUGFS_KVM) -> pl.DataFrame:
    """Every vCPU's TSC offset and scaling ratio, for the VMs whose VMM pid is known (the vCPU map).

    Missing files (no debugfs, not root, a kernel without TSC scaling) give no row or a null ratio."""
    rows: list[dict] = []
    try:
        vm_dirs = sorted(root.iterdir())
    except OSError:
        return pl.DataFrame(schema=TSC_SCHEMA)
    for vm_dir in vm_dirs:
        m = _VM_DIR.match(vm_dir.name)
        if not m or int(m.group(1)) not in vm_of_pid:
            continue
        pid = int(m.group(1))
        try:
            vcpu_dirs = sorted(vm_dir.iterdir())
        except OSError:
            continue
        for vcpu_dir in vcpu_dirs:
            v = _VCPU_DIR.match(vcpu_dir.name)
            offset = _number(vcpu_dir / "tsc-offset") if v else None
            if offset is None:
                continue
            rows.append(
                {
                    "vm": vm_of_pid[pid],
                    "pid": pid,
                    "vcpu": int(v.group(1)),
                    "tsc_offset": offset,
                    "scaling_ratio": _number(vcpu_dir / "tsc-scaling-ratio"),
                    "frac_bits": _number(vcpu_dir / "tsc-scaling-ratio-frac-bits"),
                }
            )
    return pl.DataFrame(rows, schema=TSC_SCHEMA)


@dataclass(frozen=True)
class GuestOffsets:
    """Per VM, host = guest + offset in the traces' units, or why none can be given."""

    offsets: dict[str, int]
    reasons: dict[str, str]


def guest_offsets(before: pl.DataFrame, after: pl.DataFrame, clock: str | None) -> GuestOffsets:
    """The offset of each VM whose vCPUs share one unscaled TSC offset that did not change while
    recording, when the host traced on the TSC clock; otherwise the reason per VM."""
    offsets: dict[str, int] = {}
    reasons: dict[str, str] = {}
    both = pl.concat([before, after])
    for (vm,), rows in both.group_by("vm", maintain_order=True):
        distinct = rows["tsc_offset"].unique()
        unscaled = all(
            r is None or f is None or r == 1 << f
            for r, f in zip(rows["scaling_ratio"].to_list(), rows["frac_bits"].to_list(), strict=True)
        )
        if clock != TSC_CLOCK:
            reasons[vm] = (
                f"the host traced on the {clock or 'unknown'} clock; KVM's TSC offset aligns traces only "
                f"when both sides record with --clock {TSC_CLOCK}"
            )
        elif distinct.len() != 1:
            reasons[vm] = "its vCPUs' TSC offsets differ or changed while recording"
        elif not unscaled:
            reasons[vm] = "the guest's TSC is scaled (TSC scaling ratio): not a plain offset"
        else:
            offsets[vm] = -int(distinct[0])
    return GuestOffsets(offsets, reasons)


def write_offsets_file(trace_path: Path, offsets: dict[str, int]) -> Path:
    """`<trace>.guest-offsets.csv` (ingest/offsets_file.py) with where the offsets came from."""
    path = offsets_path(trace_path)
    with atomic_file(path, force=True) as tmp, tmp.open("w") as out:
        write_offsets(offsets, out, f"kvm debugfs tsc-offset ({TSC_CLOCK} cycles)")
    return path
