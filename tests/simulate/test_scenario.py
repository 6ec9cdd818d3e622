"""Scenario loading: defaults, TOML sections, presets, and one-line errors naming the parameter."""

from __future__ import annotations

import pytest

from pvtrace.errors import ScenarioError
from pvtrace.simulate.scenario import (
    ALGORITHMS,
    Scenario,
    load_preset,
    load_scenario,
    parse_scenario,
    preset_names,
)


def test_defaults_are_the_documented_realistic_values():
    s = Scenario()
    assert s.host.slice_ns == 3_000_000 and s.host.slice_jitter == 0.25
    assert s.hypervisor.ple_window == 4096 and s.hypervisor.ple_window_grow == 2
    assert s.lock.algorithm == "ticket"
    assert s.vm.hold_ns == 1_000 and s.vm.compute_ns == 400_000


def test_toml_sections_set_parameters():
    s = parse_scenario(
        """
        description = "two guests"
        [host]
        pcpus = 8
        slice_jitter = 0
        [vm]
        count = 2
        clock_offsets_ns = [5, -7]
        clock_drift_ppm = [2, -0.5]
        [lock]
        algorithm = "pv-qspinlock"
        [hypervisor]
        directed_yield = "random"
        [cures]
        preemption_hint = true
        [run]
        duration_ns = 1_000_000
        """
    )
    assert s.description == "two guests"
    assert s.host.pcpus == 8 and s.host.slice_jitter == 0.0
    assert s.vm.count == 2 and s.vm.clock_offset_ns(1) == -7
    assert s.vm.clock_drift_ppm == (2.0, -0.5)
    assert s.lock.algorithm == "pv-qspinlock"
    assert s.hypervisor.directed_yield == "random"
    assert s.cures.preemption_hint is True
    assert s.run.duration_ns == 1_000_000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[vm]\nvcpuz = 4", "unknown parameter vm.vcpuz"),
        ("[vms]\ncount = 4", "unknown scenario section [vms]"),
        ("[vm]\nvcpus = 0", "vm.vcpus must be between 1 and 1024, got 0"),
        ("[vm]\nvcpus = 2.5", "vm.vcpus must be an integer, got 2.5"),
        ("[vm]\nvcpus = true", "vm.vcpus must be an integer, got True"),
        ("[host]\nslice_jitter = 1.5", "host.slice_jitter must be in [0, 1), got 1.5"),
        ("[host]\ngang_scheduling = 1", "host.gang_scheduling must be true or false, got 1"),
        ("[lock]\nalgorithm = 'mcs'", "lock.algorithm must be one of tas, ticket"),
        ("[vm]\nhold_dist = 'pareto'", "vm.hold_dist must be one of fixed, exp, uniform, lognormal"),
        (
            "[vm]\ncount = 2\nclock_offsets_ns = [1]",
            "vm.clock_offsets_ns must be empty or one offset per VM (2)",
        ),
        (
            "[vm]\ncount = 2\nclock_drift_ppm = [1, 5000]",
            "vm.clock_drift_ppm must be empty or one drift per VM (2), each within +-1000 ppm",
        ),
        ("[vm]\nclock_drift_ppm = ['fast']", "vm.clock_drift_ppm must be a list of numbers"),
        ("[vm]\nhold_ns = 500\nhold_max_ns = 100", "vm.hold_max_ns must be >= vm.hold_ns (500), got 100"),
        (
            "[hypervisor]\ndirected_yield = 'greedy'",
            "hypervisor.directed_yield must be one of none, random, kvm",
        ),
        ("[run]\nduration_ns = -1", "run.duration_ns must be >= 0"),
        ("vm = 3", "[vm] must be a table of parameters"),
        ("[vm\ncount = 1", "invalid TOML"),
    ],
)
def test_bad_scenarios_give_one_line_naming_the_parameter(text, needle):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.toml")
    msg = str(info.value)
    assert needle in msg
    assert msg.startswith("s.toml: ")
    assert "\n" not in msg


def test_load_scenario_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[host]\npcpus = -3\n")
    with pytest.raises(ScenarioError, match=r"bad.toml: host.pcpus must be between 1 and 4096, got -3"):
        load_scenario(p)
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.toml")


def test_presets_load_and_unknown_preset_lists_them():
    assert {"kernel-build", "lhp-demo", "overcommit-2x", "seed-table"} <= set(preset_names())
    for name in preset_names():
        s = load_preset(name)
        assert s.description
        assert s.lock.algorithm in ALGORITHMS
    with pytest.raises(ScenarioError, match="unknown preset 'nope' \\(presets: kernel-build, lhp-demo"):
        load_preset("nope")


def test_replace_validates_and_round_trips():
    s = Scenario().replace(vm={"count": 3}, lock={"algorithm": "tas"})
    assert s.vm.count == 3 and s.lock.algorithm == "tas"
    assert Scenario().replace(**{k: v for k, v in s.to_dict().items() if k != "description"}) == s
    with pytest.raises(ScenarioError, match=r"unknown parameter vm\.nope"):
        Scenario().replace(vm={"nope": 1})
