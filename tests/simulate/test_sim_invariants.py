"""Host-model invariants of the engine, checked at every heap event across random scenarios.

Work conservation: no pCPU idles (or halt-polls) while a runnable task waits,
except under gang scheduling (a declared exception: a gang's pCPUs idle while
other gangs wait), and, with per-cpu run queues, within their declared
exception: no pCPU idles or polls while its own queue has a task, and an idle
pCPU waits while tasks queue elsewhere for at most (CACHE_NICE_TRIES + 2)
balance intervals (the periodic balancer moves a cache-cold task at once and a
hot one after that many failed balances). No task is on two pCPUs, and a
task's idea of its pCPU (and, per-cpu, of its queue) matches the host's. A
vCPU runs exactly when it holds a pCPU and does not halt-poll. Runs are
deterministic per seed. Each VM's CPU share stays within a stated tolerance
of its fair share whatever the cures (PLE and directed yield,
yield-to-holder, preemption hint, shared run state) and run queues: no
hypervisor path hands out CPU time.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvtrace.simulate.balance import CACHE_NICE_TRIES
from pvtrace.simulate.engine import Engine
from pvtrace.simulate.run import discard, simulate_trace
from pvtrace.simulate.scenario import ALGORITHMS, RUNQUEUES, Scenario, load_preset, preset_names
from pvtrace.simulate.tasks import HALTED, RUNNING


class HostAudit:
    """The host invariants, called after every heap event (keeps how long pCPUs idled beside queues)."""

    def __init__(self):
        self.idle_since: dict[int, int] = {}

    def __call__(self, engine: Engine, t: int) -> None:
        host = engine.host
        on = [c for c in host.cur if c is not None]
        assert len({id(c) for c in on}) == len(on), f"t={t}: a task on two pCPUs"
        for p, c in enumerate(host.cur):
            if c is not None:
                assert c.pcpu == p, f"t={t}: task on pCPU {p} thinks it is on {c.pcpu}"
        waiting = [x for q in (host.gang_queues if host.gang else host.queues) for x in q]
        for task in waiting:
            assert task.pcpu == -1 and all(task is not c for c in on), f"t={t}: a queued task holds a pCPU"
        if host.percpu:
            self.check_percpu(engine, t)
        elif not host.gang and host.rq:
            assert all(c is not None and not c.polling for c in host.cur), (
                f"t={t}: a pCPU idles or polls while {len(host.rq)} tasks wait"
            )
        for v in engine.vcpus:
            if v.state == RUNNING:
                assert v.pcpu >= 0 and host.cur[v.pcpu] is v and not v.polling, f"t={t}: running off-CPU"
            elif v.polling:
                assert v.state == HALTED and host.cur[v.pcpu] is v, f"t={t}: polling vCPU not on its pCPU"
            else:
                assert v.pcpu == -1, f"t={t}: {v.state} vCPU holds pCPU {v.pcpu}"

    def check_percpu(self, engine: Engine, t: int) -> None:
        host = engine.host
        bound = (CACHE_NICE_TRIES + 2) * engine.s.host.balance_interval_ns
        for p, queue in enumerate(host.queues):
            for task in queue:
                assert task.last_pcpu == p, f"t={t}: a task on pCPU {p}'s queue belongs to {task.last_pcpu}"
            c = host.cur[p]
            if queue:
                assert c is not None and not c.polling, f"t={t}: pCPU {p} idles or polls beside its queue"
            if c is None and any(host.queues):
                since = self.idle_since.setdefault(p, t)
                assert t - since <= bound, f"t={t}: pCPU {p} idle since {since} while tasks wait elsewhere"
            else:
                self.idle_since.pop(p, None)


@st.composite
def scenarios(draw) -> Scenario:
    return Scenario().replace(
        host={
            "pcpus": draw(st.integers(1, 4)),
            "slice_ns": draw(st.sampled_from([50_000, 300_000, 3_000_000])),
            "noise_tasks": draw(st.integers(0, 3)),
            "noise_run_ns": 200_000,
            "noise_sleep_ns": draw(st.sampled_from([20_000, 400_000])),
            "gang_scheduling": (gang := draw(st.booleans())),
            "runqueues": "global" if gang else draw(st.sampled_from(RUNQUEUES)),
            "balance_interval_ns": draw(st.sampled_from([200_000, 4_000_000])),
            "wakeup_preemption": draw(st.booleans()),
            "run_to_parity": draw(st.booleans()),
            "next_buddy": draw(st.booleans()),
        },
        vm={
            "count": draw(st.integers(1, 3)),
            "vcpus": draw(st.integers(1, 5)),
            "locks": draw(st.integers(1, 3)),
            "compute_ns": draw(st.sampled_from([2_000, 20_000])),
            "hold_ns": draw(st.sampled_from([1_000, 3_000])),
            "ops": draw(st.integers(1, 120)),
            "sleep_prob": draw(st.sampled_from([0.0, 0.1])),
            "sleep_ns": 30_000,
            "kernel_fraction": draw(st.sampled_from([0.0, 0.5])),
        },
        lock={
            "algorithm": draw(st.sampled_from(ALGORITHMS)),
            "spin_threshold_ns": draw(st.sampled_from([1_000, 40_000])),
            "early_halt": draw(st.sampled_from(["", "pred-preempted"])),
            "kick": draw(st.sampled_from(["", "hash"])),
        },
        hypervisor={
            "ple": draw(st.booleans()),
            "directed_yield": draw(st.sampled_from(["none", "random", "kvm"])),
            "halt_poll_ns": draw(st.sampled_from([0, 200_000])),
        },
        cures={
            "yield_to_holder": draw(st.booleans()),
            "yield_threshold_ns": 3_000,
            "preemption_hint": draw(st.booleans()),
            "shared_run_state": draw(st.booleans()),
        },
        run={"duration_ns": draw(st.sampled_from([0, 3_000_000]))},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_host_invariants_hold_at_every_event(scenario: Scenario, seed: int):
    Engine(scenario, discard, seed=seed, audit=HostAudit()).run()


@settings(max_examples=6, deadline=None)
@given(
    preset=st.sampled_from(preset_names()), runqueues=st.sampled_from(RUNQUEUES), seed=st.integers(0, 1000)
)
def test_presets_keep_the_host_invariants(preset: str, runqueues: str, seed: int):
    s = load_preset(preset).replace(host={"runqueues": runqueues}, run={"duration_ns": 30_000_000})
    Engine(s, discard, seed=seed, audit=HostAudit()).run()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**32 - 1))
def test_runs_are_deterministic_per_seed(scenario: Scenario, seed: int):
    a, ta = simulate_trace(scenario, seed=seed)
    b, tb = simulate_trace(scenario, seed=seed)
    assert a.events.equals(b.events)
    assert ta.to_dict() == tb.to_dict()


CURES = {
    "none": {"hypervisor": {"ple": False}},
    "ple-kvm": {"hypervisor": {"ple": True, "directed_yield": "kvm"}},
    "ple-random": {"hypervisor": {"ple": True, "directed_yield": "random"}},
    "yield-to-holder": {"hypervisor": {"ple": False}, "cures": {"yield_to_holder": True}},
    "hint": {"cures": {"preemption_hint": True}},
    "shared-run-state": {"cures": {"shared_run_state": True}},
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cure=st.sampled_from(sorted(CURES)),
    algorithm=st.sampled_from(["ticket", "tas", "pv-ticket", "pv-qspinlock"]),
    vms=st.integers(1, 2),
    runqueues=st.sampled_from(RUNQUEUES),
    seed=st.integers(0, 10_000),
)
def test_each_vm_gets_at_most_its_fair_share_whatever_the_cures(cure, algorithm, vms, runqueues, seed):
    # Always-runnable background tasks (1 us sleeps) compete with hot-lock guests for 2 pCPUs
    # for 400 ms. Every task has equal weight, so a VM of k vCPUs among N tasks is owed
    # k/N of the host; vCPUs that halt may use less, nobody may use more. Tolerance: the fair
    # class bounds each task's lag by about two requests (2 x 3 ms x 1.25 jitter), plus 2%.
    # Per-cpu queues are fair within a queue; the balancer evens out the queues' task counts,
    # not their vruntimes (as the kernel's balances load), so a task is owed between a pCPU
    # shared by ceil(N/P) tasks and one shared by floor(N/P).
    d, pcpus, noise = 400_000_000, 2, 3
    s = Scenario().replace(
        host={
            "pcpus": pcpus,
            "noise_tasks": noise,
            "noise_run_ns": 5_000_000,
            "noise_sleep_ns": 1_000,
            "runqueues": runqueues,
        },
        vm={"count": vms, "vcpus": 2, "locks": 1, "compute_ns": 20_000, "hold_ns": 3_000},
        lock={"algorithm": algorithm},
        run={"duration_ns": d},
    )
    s = s.replace(**CURES[cure])
    e = Engine(s, discard, seed=seed)
    e.run()
    n_tasks = vms * 2 + noise
    if runqueues == "global":
        most = least = d * pcpus / n_tasks
    else:
        most, least = d / (n_tasks // pcpus), d / -(-n_tasks // pcpus)
    tol = 2 * s.host.slice_ns * 1.25 / least + 0.02
    e.host.charge_all(d)
    for vm in e.vms:
        used = sum(v.cpu_ns for v in vm.vcpus)
        assert used <= len(vm.vcpus) * most * (1 + tol), (vm.name, used / d, len(vm.vcpus) * most / d)
    for n in e.noise:
        assert n.cpu_ns >= least * (1 - tol), (n.cpu_ns / d, least / d)
