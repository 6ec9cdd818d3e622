"""Simulator runs rendered in every text format and view parse completely and exactly.

Parse level: every rendered line is read (no problem, no unread line), the records by
tracepoint equal an independent count of the rendered text, and the vCPU-thread records
come back with the thread ids and CPUs the renderer wrote. (The mapping to canonical events
is NORMALIZE's part of the round trip.)
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtrace.ingest.load import load, read_raw
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset, preset_names

FORMATS = {"ftrace": "ftrace", "trace-cmd": "trace-cmd", "perf": "perf-script"}
VIEWS = ("host", "guest", "merged")
EVENT = re.compile(r"\d\.\d+: +(?:\w+:)?(\w+):")


def _run(preset: str, seed: int):
    s = load_preset(preset)
    s = dataclasses.replace(s, run=dataclasses.replace(s.run, duration_ns=15_000_000))
    trace, _ = simulate_trace(s, seed=seed)
    return trace


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(preset=st.sampled_from(preset_names()), seed=st.integers(1, 10_000))
def test_every_view_in_every_format_parses_exactly(
    tmp_path_factory: pytest.TempPathFactory, preset: str, seed: int
) -> None:
    trace = _run(preset, seed)
    d = tmp_path_factory.mktemp("rt")
    for fmt, parsed_as in FORMATS.items():
        for view in VIEWS:
            files = [
                f for f in write_rendered(trace, fmt, view, d / f"{fmt}-{view}.txt") if f.suffix != ".csv"
            ]
            # `perf script` prints nothing at all for a VM without samples: no format can claim that file
            files = [f for f in files if f.stat().st_size]
            n_records = 0
            for f in files:
                raw, info, verdict = read_raw(f)
                n_records += raw.height
                text = f.read_text()
                assert verdict.format == parsed_as, (fmt, view, f.name)
                assert info.problems.total == 0, info.problems.to_dict()
                n_lines = len(text.splitlines())
                assert (
                    info.stats["records"] + info.stats["header_lines"] + info.stats["blank_lines"] == n_lines
                )
                want = Counter(EVENT.findall(text))
                assert Counter(dict(raw.group_by(pl.col("event").cast(pl.String)).len().iter_rows())) == want
            if not files:
                continue
            got = load(files)
            assert sum(got.meta.extra["events_by_tracepoint"].values()) == n_records


def test_vcpu_thread_fields_come_back(tmp_path: Path) -> None:
    trace = _run("lhp-demo", 7)
    files = write_rendered(trace, "ftrace", "host", tmp_path / "h.txt")
    text_file = next(f for f in files if f.suffix == ".txt")
    raw, _, _ = read_raw(text_file)
    vcpu = raw.filter(pl.col("comm").str.contains(r"^CPU \d+/KVM$"))
    # the renderer's identities: tid = 1000 * (vm index + 1) + 1 + vcpu (RENDER notes)
    n = vcpu["comm"].str.extract(r"^CPU (\d+)/KVM$", 1).cast(pl.Int32)
    assert ((vcpu["tid"] - 1) % 1000 == n).all()
    sim = trace.events.filter(pl.col("kind") == "vm_exit")
    assert raw.filter(pl.col("event") == "kvm_exit").height == sim.height
