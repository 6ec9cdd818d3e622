"""Host vCPU threads tied to the guest files without a map file (a real `trace-cmd record -A`
capture has none), and guests that stay untied make the joined metrics unavailable, never 0."""

from __future__ import annotations

import re

import polars as pl
import pytest

from pvtrace.analyze import analyze
from pvtrace.ingest.load import load
from pvtrace.ingest.vcpu_map import MAP_SUFFIX, read_vcpu_map
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario


def _run(seed: int):
    s = Scenario().replace(
        lock={"algorithm": "ticket"},
        host={"pcpus": 2},
        vm={"count": 2, "vcpus": 2, "locks": 1, "compute_ns": 20_000, "hold_ns": 3_000},
        run={"duration_ns": 40_000_000},
    )
    return simulate_trace(s, seed=seed)[0]


def _without_map(paths):
    side = next(p for p in paths if p.name.endswith(MAP_SUFFIX))
    truth = read_vcpu_map(side)
    side.unlink()
    return [p for p in paths if p.suffix == ".txt"], truth


def _ties(meta):
    return sorted((r["tid"], r["vm"], r["vcpu"]) for r in meta.vcpu_map)


@pytest.mark.parametrize("fmt", ["trace-cmd", "ftrace", "perf"])
def test_host_threads_are_tied_to_the_guest_files_by_timing(tmp_path, fmt):
    trace = _run(3)
    texts, truth = _without_map(write_rendered(trace, fmt, "merged", tmp_path / "m.txt"))
    with_map = load(texts)
    assert _ties(with_map.meta) == sorted(truth.select("tid", "vm", "vcpu").iter_rows())
    assert "unmapped_guests" not in with_map.meta.clock
    if fmt == "trace-cmd":  # one timeline: the spin is the one measured with the map file
        (tmp_path / "map.csv").write_text(
            "tid,pid,vm,vcpu\n" + "".join(f"{t},{p},{v},{c}\n" for t, p, v, c, *_ in truth.iter_rows())
        )
        given = analyze(load(texts, vcpu_map_path=tmp_path / "map.csv")).summary.totals["spin_ns"]
        assert analyze(with_map).summary.totals["spin_ns"] == given > 0


def test_a_renamed_guest_file_is_tied_to_the_host_vm_its_map_file_names(tmp_path):
    """generate's side files name the VMs vm0 and vm1; with m-vm0.txt renamed guestA.txt the map
    file's vm0 has no guest file and guestA no host threads. The events tie them, the offsets
    file's vm0 line is guestA's, an offset given under either name is taken, and the analysis is
    the whole run's (new-user audit, session 19: it stayed unjoined and the hints named
    --vcpu-map and --lock-kind)."""
    paths = write_rendered(_run(6), "ftrace", "merged", tmp_path / "m.txt")
    texts = [p for p in paths if p.suffix == ".txt"]
    whole = analyze(load(texts)).summary
    renamed = tmp_path / "guestA.txt"
    (tmp_path / "m-vm0.txt").rename(renamed)
    texts = [tmp_path / "m.txt", renamed, tmp_path / "m-vm1.txt"]
    loaded = load(texts)
    clock = loaded.meta.clock
    assert clock["vms_tied"] == {"vm0": "guestA"} and "unmapped_guests" not in clock
    assert clock["guests"]["guestA"]["mode"].startswith("from m.txt.guest-offsets.csv")
    assert analyze(loaded).summary.totals == whole.totals
    offsets = {vm: int(n) for vm, n in clock["guest_offset_ns"].items()}
    for name in ("vm0", "guestA"):
        typed = load(texts, guest_offset_ns={name: offsets["guestA"], "vm1": offsets["vm1"]}).meta.clock
        assert typed["synchronized"] is True and typed["guest_offset_ns"]["guestA"] == offsets["guestA"]


def test_a_guest_file_left_out_makes_every_total_partial_and_is_named(tmp_path):
    """The host file with vm0's guest file but not vm1's: vm1's waits are in no total, so every
    total of waits says so, with the file to add, and so does a warning (new-user audit: spin -44%,
    contended -59% against the truth, printed whole)."""
    paths = write_rendered(_run(6), "ftrace", "merged", tmp_path / "m.txt")
    host, vm0 = tmp_path / "m.txt", tmp_path / "m-vm0.txt"
    loaded = load([host, vm0])
    (hint,) = [w for w in loaded.meta.extra["warnings"] if "named like guest traces" in w]
    assert "(m-vm1.txt)" in hint and hint.endswith(f"{host} {vm0} {tmp_path / 'm-vm1.txt'}")
    a = analyze(loaded)
    s = a.summary
    for key in ("spin_ns", "waste_lhp_ns", "n_lhp_harmful", "n_contended"):
        (part,) = s.extra["partial"][key]
        assert part["missing"] == "vm1's waits: no guest trace of vm1 is given" and "m-vm1.txt" in part["fix"]
    by_vm = {r["vm"]: r["spin_ns"] for r in a.table("waste_by_vm").iter_rows(named=True)}
    assert by_vm["vm1"] is None and by_vm["vm0"] == s.totals["spin_ns"] > 0
    whole = analyze(load([p for p in paths if p.suffix == ".txt"])).summary
    assert not [p for ps in whole.extra["partial"].values() for p in ps if "no guest trace" in p["missing"]]


def test_a_guest_file_alone_names_the_host_file_beside_it(tmp_path):
    """A guest trace analyzed alone, with its host's file (and the other guest's) next to it: the
    warning names the host file and gives the command with every file (new-user audit: nothing said)."""
    write_rendered(_run(6), "ftrace", "merged", tmp_path / "m.txt")
    vm0 = tmp_path / "m-vm0.txt"
    (hint,) = [w for w in load([vm0]).meta.extra["warnings"] if "named like the host trace" in w]
    assert "this guest sits next to it (m.txt)" in hint
    assert hint.endswith(f"pvtrace analyze {tmp_path / 'm.txt'} {vm0} {tmp_path / 'm-vm1.txt'}")
    (tmp_path / "m.txt").rename(tmp_path / "other.txt")  # no host-like name: nothing to say
    assert not [w for w in load([vm0]).meta.extra.get("warnings", []) if "named like the host" in w]


def test_a_guest_without_host_threads_is_left_out_of_joined_metrics(tmp_path):
    """vm0's vCPU threads removed from the host side: its waits cannot be joined (its figures are
    null, every joined total says it leaves vm0 out, with the fix); vm1's are, in full."""
    trace = _run(4)
    texts, truth = _without_map(write_rendered(trace, "trace-cmd", "merged", tmp_path / "m.txt"))
    vm0 = [str(t) for t in truth.filter(truth["vm"] == "vm0")["tid"]]
    mentions = re.compile(r"\b(" + "|".join(vm0) + r")\b")
    lines = texts[0].read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (ln.lstrip().startswith("host") and mentions.search(ln))]
    texts[0].write_text("".join(kept))
    loaded = load(texts)
    assert loaded.meta.clock["unmapped_guests"] == ["vm0"]
    assert "--vcpu-map" in loaded.meta.clock["warning"]
    a = analyze(loaded)
    s = a.summary
    for key in ("spin_ns", "waste_lhp_ns", "n_lhp_harmful", "wait_preempted_ns"):
        (part,) = s.extra["partial"][key]
        assert part["missing"].startswith("vm0's ") and "--vcpu-map" in part["fix"]
    by_vm = {r["vm"]: r["spin_ns"] for r in a.table("waste_by_vm").iter_rows(named=True)}
    assert by_vm["vm0"] is None and by_vm["vm1"] == s.totals["spin_ns"] > 0
    waits = a.table("waits")
    assert (
        waits.filter(pl.col("vm") == "vm0")["spin_ns"].null_count()
        == waits.filter(pl.col("vm") == "vm0").height
    )
    assert "n_contended" not in s.extra["partial"] and s.totals["n_contended"] == (~waits["truncated"]).sum()


def test_a_host_file_alone_names_the_guest_files_next_to_it(tmp_path):
    paths = write_rendered(_run(5), "ftrace", "merged", tmp_path / "m.txt")
    host = tmp_path / "m.txt"
    texts = [host, *sorted(p for p in paths if p.suffix == ".txt" and p != host)]
    s = analyze(load([host])).summary
    (warning,) = [w for w in s.extra["warnings"] if "named like guest traces" in w]
    assert "m-vm0.txt, m-vm1.txt" in warning and warning.endswith(" ".join(str(p) for p in texts))
    assert not any("guest traces" in w for w in analyze(load(texts)).summary.extra.get("warnings", []))
