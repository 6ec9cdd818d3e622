"""Host thread -> (vm, vcpu): map files, thread names, KVM vcpu ids, guessed VMs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pvtrace.errors import FormatError
from pvtrace.ingest.vcpu_map import VCPU_MAP_SCHEMA, build_vcpu_map, find_vcpu_map, read_vcpu_map


def names(pairs: list[tuple[int, str]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"tid": pl.Int32, "comm": pl.String}, orient="row")


def ids(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(pairs, schema={"tid": pl.Int32, "kvm_vcpu": pl.Int32}, orient="row")


NO_TGID = pl.DataFrame(schema={"tid": pl.Int32, "tgid": pl.Int32})


def as_rows(vmap: pl.DataFrame) -> list[tuple]:
    return vmap.select("tid", "pid", "vm", "vcpu", "apic_id").rows()


def test_read_map_file(tmp_path: Path) -> None:
    path = tmp_path / "t.txt.vcpus.csv"
    path.write_text("tid,pid,vm,vcpu\n1001,1000,vm0,0\n1002,1000,vm0,1\n2001,2000,vm1,0\n")
    vmap = read_vcpu_map(path)
    assert vmap.schema == VCPU_MAP_SCHEMA
    assert as_rows(vmap) == [(1001, 1000, "vm0", 0, 0), (1002, 1000, "vm0", 1, 1), (2001, 2000, "vm1", 0, 0)]
    assert set(vmap["how"]) == {"map file"}


def test_read_map_file_with_apic_ids_and_no_pid(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("tid,vm,vcpu,apic_id\n1001,web,3,4\n")
    assert as_rows(read_vcpu_map(path)) == [(1001, None, "web", 3, 4)]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("tid,pid,vm\n1,2,a\n", 1, "lacks column"),
        ("tid,pid,vm,vcpu\n1001,1000,vm0,0\n1002,x,vm0,1\n", 3, "bad vCPU map row"),
        ("tid,pid,vm,vcpu\n1001,1000,,0\n", 2, "bad vCPU map row"),
        ("tid,pid,vm,vcpu\n1001,1000,vm0,\n", 2, "bad vCPU map row"),
    ],
)
def test_bad_map_file_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(FormatError) as exc:
        read_vcpu_map(path)
    assert exc.value.path == str(path) and exc.value.line == line and what in str(exc.value)


def test_map_file_duplicate_thread(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("tid,pid,vm,vcpu\n1,2,a,0\n1,2,a,1\n")
    with pytest.raises(FormatError, match="twice"):
        read_vcpu_map(path)


def test_find_map_next_to_input(tmp_path: Path) -> None:
    trace = tmp_path / "host.txt.xz"
    trace.write_bytes(b"")
    assert find_vcpu_map([trace]) is None
    (tmp_path / "host.txt.vcpus.csv").write_text("tid,pid,vm,vcpu\n")
    assert find_vcpu_map([trace]) == tmp_path / "host.txt.vcpus.csv"
    (tmp_path / "host.txt.xz.vcpus.csv").write_text("tid,pid,vm,vcpu\n")
    assert find_vcpu_map([trace]) == tmp_path / "host.txt.xz.vcpus.csv"


def test_names_and_tgid() -> None:
    vmap, notes = build_vcpu_map(
        names(
            [(11, "CPU 0/KVM"), (12, "CPU 1/KVM"), (12, "CPU 1/KVM"), (5, "qemu-system-x86"), (0, "<idle>")]
        ),
        ids([(11, 0)]),
        pl.DataFrame({"tid": [11, 12], "tgid": [10, 10]}),
    )
    assert as_rows(vmap) == [(11, 10, "10", 0, 0), (12, 10, "10", 1, 1)]
    assert vmap["how"].to_list() == [
        "vcpu from thread name and KVM vcpu id; vm = tgid (QEMU process)",
        "vcpu from thread name; vm = tgid (QEMU process)",
    ]
    assert notes == []


def test_guessed_vms_split_by_id_order() -> None:
    # two QEMUs without tgids: each creates CPU 0..n-1 in order; a hot-plugged CPU 4 comes much later
    pairs = [(100 + i, f"CPU {i}/KVM") for i in range(4)] + [(200 + i, f"CPU {i}/KVM") for i in range(2)]
    pairs.append((900, "CPU 2/KVM"))
    vmap, notes = build_vcpu_map(names(pairs), ids([]), NO_TGID)
    vms = dict(zip(vmap["tid"], vmap["vm"], strict=True))
    assert {vms[100], vms[103]} == {"guess-100"}
    assert {vms[200], vms[201], vms[900]} == {"guess-200"}
    assert any("guessed" in n for n in notes)


def test_vhost_thread_names_the_qemu_pid() -> None:
    pairs = [
        (105, "CPU 0/KVM"),
        (106, "CPU 1/KVM"),
        (100, "vhost-100"),
        (300, "kvm-pit/299"),
        (302, "CPU 0/KVM"),
    ]
    vmap, notes = build_vcpu_map(names(pairs), ids([]), NO_TGID)
    assert as_rows(vmap) == [(105, 100, "100", 0, 0), (106, 100, "100", 1, 1), (302, 299, "299", 0, 0)]
    assert any("vhost-/kvm-pit" in n for n in notes)


def test_kvm_vcpu_ids_only_same_comm() -> None:
    # the ftrace-5flag nested-vmx case: two threads named qemu-system-x86, vcpu 0 and 1
    vmap, _ = build_vcpu_map(
        names([(8397, "qemu-system-x86"), (8396, "qemu-system-x86")]),
        ids([(8397, 1), (8396, 0), (8397, 1)]),
        NO_TGID,
    )
    assert as_rows(vmap) == [(8396, None, "guess-8396", 0, 0), (8397, None, "guess-8396", 1, 1)]
    assert "APIC id assumed" in vmap["how"][0]


def test_different_processes_are_different_guesses() -> None:
    vmap, _ = build_vcpu_map(names([(10, "qemu-kvm"), (11, "firecracker")]), ids([(10, 0), (11, 1)]), NO_TGID)
    assert vmap["vm"].n_unique() == 2


def test_user_map_wins_and_names_vms_by_pid() -> None:
    user = pl.DataFrame(
        {"tid": [11], "pid": [10], "vm": ["web"], "vcpu": [0], "apic_id": [0], "how": ["map file"]}
    )
    vmap, _ = build_vcpu_map(
        names([(11, "CPU 0/KVM"), (12, "CPU 1/KVM")]),
        ids([(11, 7)]),  # the trace disagrees about 11: the map wins
        pl.DataFrame({"tid": [11, 12], "tgid": [10, 10]}),
        user.cast(dict(VCPU_MAP_SCHEMA)),
    )
    assert as_rows(vmap) == [(11, 10, "web", 0, 0), (12, 10, "web", 1, 1)]
    assert vmap["how"][1].endswith("vm from tgid and map file")


def test_conflicting_ids_are_noted() -> None:
    vmap, notes = build_vcpu_map(names([]), ids([(11, 0), (11, 0), (11, 1)]), NO_TGID)
    assert as_rows(vmap)[0][3] == 0
    assert any("several vCPU KVM vcpu ids" in n for n in notes)


@pytest.mark.parametrize("where", ["missing.csv", "."])
def test_an_unreadable_vcpu_map_says_why_in_the_os_words(tmp_path: Path, where: str) -> None:
    """A map that is not there or is a folder: the OS's words, not a Python exception's name."""
    path = tmp_path / where
    with pytest.raises(FormatError) as exc:
        read_vcpu_map(path)
    assert str(exc.value).endswith("(No such file or directory)" if where != "." else "(is a directory)")
