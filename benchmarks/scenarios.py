"""Simulator runs that more than one benchmark uses as input."""

from __future__ import annotations


def pv_ple_run(duration_ns: int):
    """pv-ticket guests with PLE and yield-to-holder, a background host task: 3 VMs x 4 vCPUs on
    4 pCPUs (every kind of host and guest event)."""
    from pvtrace.simulate.scenario import load_preset

    return load_preset("lhp-demo").replace(
        lock={"algorithm": "pv-ticket", "spin_threshold_ns": 5_000},
        hypervisor={"ple": True},
        host={"noise_tasks": 1, "pcpus": 4},
        vm={"count": 3, "vcpus": 4},
        cures={"yield_to_holder": True, "yield_threshold_ns": 2_000},
        run={"duration_ns": duration_ns},
    )
