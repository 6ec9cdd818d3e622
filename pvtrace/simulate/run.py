"""Running a scenario: events to a sink (Parquet, memory, nowhere) plus ground truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pvtrace.schema import empty_events
from pvtrace.simulate.engine import Engine
from pvtrace.simulate.locks import algorithm_of
from pvtrace.simulate.scenario import Scenario
from pvtrace.simulate.truth import GroundTruth
from pvtrace.trace import EventWriter, Trace, TraceMeta, VmInfo

BATCH_SIZE = 1 << 18


@dataclass
class SimRun:
    """What one run produced besides its events."""

    meta: TraceMeta
    truth: GroundTruth

    @property
    def n_events(self) -> int:
        return int(self.truth.extra["n_events"])


def trace_meta(scenario: Scenario, seed: int, t_end: int) -> TraceMeta:
    """The metadata of a simulated trace (INTERFACES.md)."""
    algo = algorithm_of(scenario.lock)
    vms = {
        f"vm{i}": VmInfo(n_vcpus=scenario.vm.vcpus, lock_kind=algo.kind, lock_algorithm=algo.name)
        for i in range(scenario.vm.count)
    }
    return TraceMeta(
        source=["pvtrace generate"],
        format="sim",
        view="full",
        t_start=0,
        t_end=t_end,
        n_pcpus=scenario.host.pcpus,
        vms=vms,
        clock={
            "guest_offset_ns": {f"vm{i}": scenario.vm.clock_offset_ns(i) for i in range(scenario.vm.count)},
            **(
                {"guest_drift_ppm": {f"vm{i}": float(x) for i, x in enumerate(scenario.vm.clock_drift_ppm)}}
                if any(scenario.vm.clock_drift_ppm)
                else {}
            ),
        },
        extra={"scenario": scenario.to_dict(), "seed": seed},
    )


def simulate(
    scenario: Scenario,
    sink: Callable[[pl.DataFrame], None],
    *,
    seed: int | None = None,
    progress: Callable[[float], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> SimRun:
    """Run a scenario, handing event batches (canonical schema, in order) to sink."""
    engine = Engine(scenario, sink, seed=seed, progress=progress, batch_size=batch_size)
    truth = engine.run()
    return SimRun(meta=trace_meta(scenario, engine.seed, truth.t_end), truth=truth)


def simulate_to_parquet(
    scenario: Scenario,
    path: Path | str,
    *,
    seed: int | None = None,
    force: bool = False,
    progress: Callable[[float], None] | None = None,
) -> SimRun:
    """Stream a run's events into a Parquet file (memory bounded by one batch)."""
    with EventWriter(path, force=force) as writer:
        run = simulate(scenario, writer.write, seed=seed, progress=progress)
        writer.close(run.meta)
    return run


def simulate_trace(
    scenario: Scenario, *, seed: int | None = None, progress: Callable[[float], None] | None = None
) -> tuple[Trace, GroundTruth]:
    """Run a scenario and keep its events in memory (small runs, views, text rendering)."""
    batches: list[pl.DataFrame] = []
    run = simulate(scenario, batches.append, seed=seed, progress=progress)
    events = pl.concat(batches) if batches else empty_events()
    return Trace(events=events, meta=run.meta), run.truth


def discard(_: pl.DataFrame) -> None:
    """A sink for runs where only the ground truth matters (experiments)."""
