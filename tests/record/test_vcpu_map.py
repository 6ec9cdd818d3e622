"""The host vCPU thread map read from a fake /proc."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from fake_kernel import QEMU_A, QEMU_B, QEMU_NO_NAMES, make_proc

from pvtrace.errors import OutputExistsError
from pvtrace.record.vcpu_map import (
    merge_maps,
    scan_vcpu_threads,
    vcpu_map_path,
    vm_name,
    vmm_pids,
    write_vcpu_map,
)


def test_scan_maps_each_vcpu_thread_to_its_vm_and_index(tmp_path: Path) -> None:
    proc = make_proc(tmp_path / "proc", qemus=[QEMU_A, QEMU_B, QEMU_NO_NAMES])
    table, processes = scan_vcpu_threads(proc)
    assert table.to_dicts() == [
        {"tid": 4243, "pid": 4242, "vm": "vmA", "vcpu": 0},
        {"tid": 4244, "pid": 4242, "vm": "vmA", "vcpu": 1},
        {"tid": 5003, "pid": 5000, "vm": "vmB", "vcpu": 0},
    ]
    assert [(p.pid, p.vm, p.n_vcpu_threads) for p in processes] == [
        (4242, "vmA", 2),
        (5000, "vmB", 1),
        (6000, "6000", 0),
    ]
    assert vmm_pids(proc) == [4242, 5000, 6000]  # bash (pid 77) is not QEMU


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["qemu", "-name", "guest=web1,debug-threads=on"], "web1"),
        (["qemu", "-name", "db,debug-threads=on"], "db"),
        (["qemu", "-name", "plain"], "plain"),
        (["qemu", "-name", "debug-threads=on,guest=late"], "late"),
        (["qemu", "-m", "1G"], "321"),
        (["qemu", "-name"], "321"),
    ],
)
def test_vm_name_from_qemu_command_line(args: list[str], expected: str) -> None:
    assert vm_name(321, "\0".join(args) + "\0") == expected


def test_firecracker_vcpu_threads(tmp_path: Path) -> None:
    fc = {
        "pid": 700,
        "comm": "firecracker",
        "args": ["firecracker", "--id", "fc-vm1", "--api-sock", "/s"],
        "threads": {700: "firecracker", 702: "fc_vcpu 0", 703: "fc_vcpu 1"},
    }
    table, _ = scan_vcpu_threads(make_proc(tmp_path / "proc", qemus=[fc]))
    assert table.to_dicts() == [
        {"tid": 702, "pid": 700, "vm": "fc-vm1", "vcpu": 0},
        {"tid": 703, "pid": 700, "vm": "fc-vm1", "vcpu": 1},
    ]


def test_vm_name_without_a_readable_cmdline_is_the_pid() -> None:
    assert vm_name(9, None) == "9"


def test_merge_keeps_threads_seen_at_start_or_end(tmp_path: Path) -> None:
    start, _ = scan_vcpu_threads(make_proc(tmp_path / "p1", qemus=[QEMU_A]))
    end, _ = scan_vcpu_threads(make_proc(tmp_path / "p2", qemus=[QEMU_A, QEMU_B]))
    merged = merge_maps(start, end)
    assert merged["tid"].to_list() == [4243, 4244, 5003]


def test_side_file_has_the_agreed_header_and_refuses_to_overwrite(tmp_path: Path) -> None:
    table, _ = scan_vcpu_threads(make_proc(tmp_path / "proc", qemus=[QEMU_A]))
    path = vcpu_map_path(tmp_path / "host.txt")
    assert path.name == "host.txt.vcpus.csv"
    write_vcpu_map(table, path, force=False)
    assert path.read_text().splitlines() == ["tid,pid,vm,vcpu", "4243,4242,vmA,0", "4244,4242,vmA,1"]
    with pytest.raises(OutputExistsError):
        write_vcpu_map(table, path, force=False)
    write_vcpu_map(table.head(1), path, force=True)
    assert pl.read_csv(path).height == 1
