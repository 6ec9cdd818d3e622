"""A simulator scenario: frozen dataclasses with realistic defaults, loaded from TOML.

Every parameter has a name in a TOML section ([host], [vm], [lock],
[hypervisor], [cures], [run]) and a default taken from published numbers
(docs/simulator.md gives each one's source). A bad or unknown parameter raises
ScenarioError naming it, in one line.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from pvtrace.errors import ScenarioError
from pvtrace.guest_signals import HZ_CHOICES
from pvtrace.simulate.locks import TRAIT_KEYS

ALGORITHMS: tuple[str, ...] = (
    "tas",
    "ticket",
    "pv-ticket",
    "qspinlock",
    "pv-qspinlock",
    "virt-tas",
    "unfair-queued",
)
DISTRIBUTIONS: tuple[str, ...] = ("fixed", "exp", "uniform", "lognormal")
YIELD_POLICIES: tuple[str, ...] = ("none", "random", "kvm")
RUNQUEUES: tuple[str, ...] = ("global", "per-cpu")


@dataclass(frozen=True)
class Host:
    """The host: pCPUs and its fair scheduler."""

    pcpus: int = 4
    slice_ns: int = 3_000_000
    slice_jitter: float = 0.25
    wakeup_preemption: bool = True
    run_to_parity: bool = True
    next_buddy: bool = True
    cpu_ghz: float = 3.0
    noise_tasks: int = 0
    noise_run_ns: int = 1_000_000
    noise_sleep_ns: int = 3_000_000
    gang_scheduling: bool = False
    runqueues: str = "global"
    balance_interval_ns: int = 4_000_000


@dataclass(frozen=True)
class Vm:
    """The guests: count x vcpus, each vCPU running compute then a critical section, repeatedly."""

    count: int = 1
    vcpus: int = 4
    locks: int = 4
    lock_skew: float = 0.0
    compute_ns: int = 400_000
    compute_dist: str = "exp"
    compute_sigma: float = 1.0
    hold_ns: int = 1_000
    hold_dist: str = "exp"
    hold_sigma: float = 1.0
    hold_max_ns: int = 200_000
    ops: int = 2000
    kernel_fraction: float = 0.2
    sleep_prob: float = 0.0
    sleep_ns: int = 2_000_000
    ipi_prob: float = 0.0
    clock_offsets_ns: tuple[int, ...] = ()
    # how fast each guest's clock runs against the host's, in ppm (empty: none drifts); the
    # rendered guest files drift so, and the offsets side file says so
    clock_drift_ppm: tuple[float, ...] = ()
    guest_hz: int = 1000  # the guests' CONFIG_HZ: their scheduler tick in the guest view

    def clock_offset_ns(self, vm_index: int) -> int:
        """Guest clock = host clock - offset; a default that differs per VM and is not round."""
        if self.clock_offsets_ns:
            return self.clock_offsets_ns[vm_index]
        return -(1_000_000_000 * (10 + 5 * vm_index) + 271_828 * (vm_index + 1))


@dataclass(frozen=True)
class Lock:
    """The guest spinlock algorithm, its pv spin budget, and trait overrides ("": the algorithm's)."""

    algorithm: str = "ticket"
    spin_threshold_ns: int = 40_000
    order: str = ""
    pv: str = ""
    stealing: str = ""
    early_halt: str = ""
    kick: str = ""


@dataclass(frozen=True)
class Hypervisor:
    """KVM's features: pause-loop exiting, directed yield, halt-polling, exit and kick costs."""

    ple: bool = True
    ple_window: int = 4096
    ple_window_grow: int = 2
    ple_window_max: int = 4_294_967_295
    directed_yield: str = "kvm"
    exit_cost_ns: int = 700
    entry_ns: int = 300
    spin_scan_ns: int = 500
    kick_latency_ns: int = 3_000
    ipi_latency_ns: int = 2_000
    pv_tlb_flush: bool = True
    halt_poll_ns: int = 200_000
    halt_poll_grow: int = 2
    halt_poll_grow_start: int = 10_000
    halt_poll_shrink: int = 2


@dataclass(frozen=True)
class Cures:
    """The cures that combine with any lock (spin-then-halt is the pv lock algorithms)."""

    yield_to_holder: bool = False
    yield_threshold_ns: int = 40_000
    preemption_hint: bool = False
    hint_max_extension_ns: int = 50_000
    shared_run_state: bool = False


@dataclass(frozen=True)
class Run:
    """Seed and length: a fixed amount of work (duration_ns = 0) or a fixed duration."""

    seed: int = 1
    duration_ns: int = 0


@dataclass(frozen=True)
class Scenario:
    """One complete simulator configuration."""

    host: Host = field(default_factory=Host)
    vm: Vm = field(default_factory=Vm)
    lock: Lock = field(default_factory=Lock)
    hypervisor: Hypervisor = field(default_factory=Hypervisor)
    cures: Cures = field(default_factory=Cures)
    run: Run = field(default_factory=Run)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (TOML/JSON-able), section by section."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = {
                    k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(value).items()
                }
            else:
                out[f.name] = value
        return out

    def replace(self, **changes: dict[str, Any]) -> Scenario:
        """A copy with some parameters changed, e.g. replace(vm={"count": 3}); validated."""
        raw = self.to_dict()
        for section, values in changes.items():
            if section not in raw or not isinstance(raw[section], dict):
                known = ", ".join(f"[{s}]" for s in SECTIONS)
                raise ScenarioError(f"unknown scenario section [{section}] (known: {known})")
            raw[section] = {**raw[section], **values}
        return scenario_from_dict(raw)


SECTIONS: dict[str, type] = {
    "host": Host,
    "vm": Vm,
    "lock": Lock,
    "hypervisor": Hypervisor,
    "cures": Cures,
    "run": Run,
}


def _typed(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Check one value's type against its field; return it in the field's type."""
    name = f"{section}.{f.name}"
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f"{name} must be a string, got {value!r}")
        return value
    if isinstance(default, tuple) and name.endswith("_ppm"):  # a list of numbers
        if not isinstance(value, list | tuple) or any(
            isinstance(v, bool) or not isinstance(v, int | float) for v in value
        ):
            raise ScenarioError(f"{name} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise ScenarioError(f"{name} must be a list of integers, got {value!r}")
        return tuple(value)
    raise AssertionError(f"unhandled parameter type for {name}")  # a new field type needs a branch here


def _check(cond: bool, name: str, what: str, value: Any) -> None:
    if not cond:
        raise ScenarioError(f"{name} must be {what}, got {value!r}")


def validate(s: Scenario) -> Scenario:
    """Range checks across the whole scenario; returns it unchanged when good."""
    h, v, lk, hv, c, r = s.host, s.vm, s.lock, s.hypervisor, s.cures, s.run
    _check(1 <= h.pcpus <= 4096, "host.pcpus", "between 1 and 4096", h.pcpus)
    _check(h.slice_ns >= 1_000, "host.slice_ns", ">= 1000 (1 us)", h.slice_ns)
    _check(0.0 <= h.slice_jitter < 1.0, "host.slice_jitter", "in [0, 1)", h.slice_jitter)
    _check(h.cpu_ghz > 0, "host.cpu_ghz", "> 0", h.cpu_ghz)
    _check(h.noise_tasks >= 0, "host.noise_tasks", ">= 0", h.noise_tasks)
    _check(h.noise_run_ns >= 1, "host.noise_run_ns", ">= 1", h.noise_run_ns)
    _check(h.noise_sleep_ns >= 1, "host.noise_sleep_ns", ">= 1", h.noise_sleep_ns)
    _check(h.runqueues in RUNQUEUES, "host.runqueues", "one of " + ", ".join(RUNQUEUES), h.runqueues)
    _check(
        not (h.gang_scheduling and h.runqueues == "per-cpu"),
        "host.runqueues",
        '"global" under host.gang_scheduling (one gang owns every pCPU)',
        h.runqueues,
    )
    _check(
        h.balance_interval_ns >= 1_000, "host.balance_interval_ns", ">= 1000 (1 us)", h.balance_interval_ns
    )
    _check(1 <= v.count <= 1024, "vm.count", "between 1 and 1024", v.count)
    _check(1 <= v.vcpus <= 1024, "vm.vcpus", "between 1 and 1024", v.vcpus)
    _check(1 <= v.locks <= 1_000_000, "vm.locks", "between 1 and 1000000", v.locks)
    _check(v.lock_skew >= 0, "vm.lock_skew", ">= 0", v.lock_skew)
    _check(v.compute_ns >= 1, "vm.compute_ns", ">= 1", v.compute_ns)
    _check(
        v.compute_dist in DISTRIBUTIONS,
        "vm.compute_dist",
        "one of " + ", ".join(DISTRIBUTIONS),
        v.compute_dist,
    )
    _check(v.compute_sigma > 0, "vm.compute_sigma", "> 0", v.compute_sigma)
    _check(v.hold_ns >= 1, "vm.hold_ns", ">= 1", v.hold_ns)
    _check(v.hold_dist in DISTRIBUTIONS, "vm.hold_dist", "one of " + ", ".join(DISTRIBUTIONS), v.hold_dist)
    _check(v.hold_sigma > 0, "vm.hold_sigma", "> 0", v.hold_sigma)
    _check(v.hold_max_ns >= v.hold_ns, "vm.hold_max_ns", f">= vm.hold_ns ({v.hold_ns})", v.hold_max_ns)
    _check(v.ops >= 1, "vm.ops", ">= 1", v.ops)
    _check(0.0 <= v.kernel_fraction <= 1.0, "vm.kernel_fraction", "in [0, 1]", v.kernel_fraction)
    _check(0.0 <= v.sleep_prob <= 1.0, "vm.sleep_prob", "in [0, 1]", v.sleep_prob)
    _check(v.sleep_ns >= 1, "vm.sleep_ns", ">= 1", v.sleep_ns)
    _check(v.guest_hz in HZ_CHOICES, "vm.guest_hz", "one of " + ", ".join(map(str, HZ_CHOICES)), v.guest_hz)
    _check(0.0 <= v.ipi_prob <= 1.0, "vm.ipi_prob", "in [0, 1]", v.ipi_prob)
    _check(
        len(v.clock_offsets_ns) in (0, v.count),
        "vm.clock_offsets_ns",
        f"empty or one offset per VM ({v.count})",
        list(v.clock_offsets_ns),
    )
    _check(
        len(v.clock_drift_ppm) in (0, v.count) and all(abs(x) <= 1000 for x in v.clock_drift_ppm),
        "vm.clock_drift_ppm",
        f"empty or one drift per VM ({v.count}), each within +-1000 ppm",
        list(v.clock_drift_ppm),
    )
    _check(lk.algorithm in ALGORITHMS, "lock.algorithm", "one of " + ", ".join(ALGORITHMS), lk.algorithm)
    _check(lk.spin_threshold_ns >= 1, "lock.spin_threshold_ns", ">= 1", lk.spin_threshold_ns)
    for key, values in TRAIT_KEYS.items():
        value = getattr(lk, key)
        _check(value in ("", *values), f"lock.{key}", "empty or one of " + ", ".join(values), value)
    _check(hv.ple_window >= 1, "hypervisor.ple_window", ">= 1 (cycles)", hv.ple_window)
    _check(hv.ple_window_grow >= 1, "hypervisor.ple_window_grow", ">= 1", hv.ple_window_grow)
    _check(
        hv.ple_window_max >= hv.ple_window,
        "hypervisor.ple_window_max",
        f">= hypervisor.ple_window ({hv.ple_window})",
        hv.ple_window_max,
    )
    _check(
        hv.directed_yield in YIELD_POLICIES,
        "hypervisor.directed_yield",
        "one of " + ", ".join(YIELD_POLICIES),
        hv.directed_yield,
    )
    _check(hv.exit_cost_ns >= 1, "hypervisor.exit_cost_ns", ">= 1", hv.exit_cost_ns)
    _check(hv.entry_ns >= 0, "hypervisor.entry_ns", ">= 0", hv.entry_ns)
    _check(hv.kick_latency_ns >= 1, "hypervisor.kick_latency_ns", ">= 1", hv.kick_latency_ns)
    _check(hv.ipi_latency_ns >= 1, "hypervisor.ipi_latency_ns", ">= 1", hv.ipi_latency_ns)
    _check(hv.spin_scan_ns >= 1, "hypervisor.spin_scan_ns", ">= 1", hv.spin_scan_ns)
    _check(hv.halt_poll_ns >= 0, "hypervisor.halt_poll_ns", ">= 0 (0: no halt-polling)", hv.halt_poll_ns)
    _check(hv.halt_poll_grow >= 1, "hypervisor.halt_poll_grow", ">= 1", hv.halt_poll_grow)
    _check(hv.halt_poll_grow_start >= 1, "hypervisor.halt_poll_grow_start", ">= 1", hv.halt_poll_grow_start)
    _check(hv.halt_poll_shrink >= 0, "hypervisor.halt_poll_shrink", ">= 0", hv.halt_poll_shrink)
    _check(c.yield_threshold_ns >= 1, "cures.yield_threshold_ns", ">= 1", c.yield_threshold_ns)
    _check(c.hint_max_extension_ns >= 1, "cures.hint_max_extension_ns", ">= 1", c.hint_max_extension_ns)
    _check(r.seed >= 0, "run.seed", ">= 0", r.seed)
    _check(r.duration_ns >= 0, "run.duration_ns", ">= 0 (0: until every VM finishes vm.ops)", r.duration_ns)
    return s


def scenario_from_dict(raw: dict[str, Any]) -> Scenario:
    """Build and validate a Scenario from parsed TOML (sections of key = value)."""
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "description":
            if not isinstance(value, str):
                raise ScenarioError(f"description must be a string, got {value!r}")
            kwargs["description"] = value
            continue
        if key not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in SECTIONS)
            raise ScenarioError(f"unknown scenario section [{key}] (known: {known})")
        if not isinstance(value, dict):
            raise ScenarioError(f"[{key}] must be a table of parameters, got {value!r}")
        cls = SECTIONS[key]
        by_name = {f.name: f for f in fields(cls)}
        values = {}
        for name, v in value.items():
            if name not in by_name:
                raise ScenarioError(
                    f"unknown parameter {key}.{name} (known in [{key}]: {', '.join(by_name)})"
                )
            values[name] = _typed(key, by_name[name], v)
        kwargs[key] = cls(**values)
    return validate(Scenario(**kwargs))


def load_scenario(path: Path | str) -> Scenario:
    """Read a scenario TOML file; errors name the file and the parameter."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read scenario ({exc.strerror or exc})") from None
    return parse_scenario(text, source=str(p))


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse scenario TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: invalid TOML: {exc}") from None
    try:
        return scenario_from_dict(raw)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def preset_names() -> list[str]:
    """Names of the bundled presets."""
    folder = resources.files("pvtrace.simulate") / "presets"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> Scenario:
    """A bundled preset scenario by name."""
    names = preset_names()
    if name not in names:
        raise ScenarioError(f"unknown preset {name!r} (presets: {', '.join(names)})")
    text = (resources.files("pvtrace.simulate") / "presets" / f"{name}.toml").read_text(encoding="utf-8")
    return parse_scenario(text, source=f"preset {name}")
