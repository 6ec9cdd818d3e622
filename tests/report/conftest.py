"""Fixtures for report tests: hand-made analyses (report_fakes) and a short simulator run, analyzed."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fakes import fake_analysis, fake_trace

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"


@pytest.fixture(scope="session")
def full_analysis():
    return fake_analysis()


@pytest.fixture(scope="session")
def full_trace(full_analysis):
    return fake_trace(full_analysis)


@pytest.fixture(scope="session")
def guest_analysis():
    return fake_analysis(with_states=False)


@pytest.fixture(scope="session")
def guest_trace(guest_analysis):
    return fake_trace(guest_analysis, view="guest")


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def sim_run():
    """A short simulator run of the lhp-demo preset (2 VMs x 2 vCPUs on 2 pCPUs, ticket locks), analyzed."""
    from pvtrace.analyze import analyze
    from pvtrace.simulate.run import simulate_trace
    from pvtrace.simulate.scenario import load_preset

    scenario = load_preset("lhp-demo").replace(run={"duration_ns": 60_000_000})
    trace, _ = simulate_trace(scenario)
    return trace, analyze(trace)


@pytest.fixture(scope="session")
def sim_views(sim_run):
    """The same run as host, guest and merged tracers would see it, each analyzed."""
    import polars as pl

    from pvtrace.analyze import analyze
    from pvtrace.simulate.views import select_view
    from pvtrace.trace import Trace

    def seen(view: str) -> Trace:
        t = select_view(trace, view)
        if view == "guest":  # guest-only: a capture without the guest's ticks (no vCPU states at all)
            t = Trace(t.events.filter(pl.col("kind") != "other"), t.meta)
        return t

    trace, _ = sim_run
    return {view: (t := seen(view), analyze(t)) for view in ("host", "guest", "merged")}
