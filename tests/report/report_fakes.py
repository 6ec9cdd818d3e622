"""Hand-made Analysis objects that follow pvtrace.analyze.result's schemas, small or huge, and a tiny trace.

fake_analysis stands in for the analyzer where a test needs every table filled
or a size no quick simulation reaches (the report benchmark): the values are
random but each table is internally consistent (spin splits sum to spin,
per-lock/VM tables are aggregates of the waits, totals of the tables).
lhp_trace is a hand-written trace with one LHP incident for the real analyzer.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from pvtrace.analyze.result import TABLE_SCHEMAS, Analysis
from pvtrace.schema import conform_events
from pvtrace.summary import SPIN_SPLIT_KEYS, Summary, Unavailable
from pvtrace.trace import Trace, TraceMeta, VmInfo

SPLIT = list(SPIN_SPLIT_KEYS)


def _frame(name: str, data: dict) -> pl.DataFrame:
    schema = TABLE_SCHEMAS[name]
    return pl.DataFrame(data).select([pl.col(c).cast(t) for c, t in schema.items()])


def _states(rng: np.random.Generator, lanes: list[tuple[str, int]], span: int, per_lane: int) -> pl.DataFrame:
    parts = []
    mean = span / per_lane
    for vm, vcpu in lanes:
        kinds = rng.choice(["preempted", "halted"], size=per_lane, p=[0.7, 0.3])
        durs = rng.exponential(mean, size=2 * per_lane).astype(np.int64) + 1
        state = np.empty(2 * per_lane, dtype=object)
        state[0::2] = "running"
        state[1::2] = kinds
        ends = np.cumsum(durs)
        starts = ends - durs
        keep = starts < span
        ends = np.minimum(ends, span)
        parts.append(
            pl.DataFrame(
                {
                    "vm": vm,
                    "vcpu": vcpu,
                    "state": state[keep].astype(str),
                    "start": starts[keep],
                    "end": ends[keep],
                }
            )
        )
    df = pl.concat(parts).with_columns((pl.col("end") - pl.col("start")).alias("dur"))
    return _frame("vcpu_states", df.to_dict())


def fake_analysis(
    n_vms: int = 2,
    n_vcpus: int = 4,
    span_ns: int = 50_000_000,
    n_locks: int = 3,
    n_waits: int = 400,
    n_states_per_lane: int = 40,
    n_incidents: int = 20,
    n_pause_exits: int = 300,
    n_kicks: int = 100,
    seed: int = 1,
    with_states: bool = True,
) -> Analysis:
    """A random but self-consistent Analysis (set with_states=False for a guest-only-like one)."""
    rng = np.random.default_rng(seed)
    vms = [f"vm{i}" for i in range(n_vms)]
    lanes = [(vm, c) for vm in vms for c in range(n_vcpus)]
    locks = np.uint64(0xFFFF_8880_0000_0000) + np.arange(n_locks, dtype=np.uint64) * np.uint64(0x40)

    def pick_lane(n: int) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(lanes), size=n)
        return np.array([lanes[i][0] for i in idx]), np.array([lanes[i][1] for i in idx])

    tables: dict[str, pl.DataFrame] = {}
    if with_states:
        tables["vcpu_states"] = _states(rng, lanes, span_ns, n_states_per_lane)

    # Waits: lognormal durations split into spin parts that sum exactly.
    w_vm, w_vcpu = pick_lane(n_waits)
    w_start = rng.integers(0, span_ns, size=n_waits)
    w_dur = np.minimum(
        rng.lognormal(np.log(5_000), 1.5, size=n_waits).astype(np.int64) + 1, span_ns - w_start
    )
    frac = rng.dirichlet([4, 1, 1, 0.5, 0.5], size=n_waits)  # spin parts + halted/preempted share
    spin = (w_dur * frac[:, :4].sum(axis=1)).astype(np.int64)
    lhp = (w_dur * frac[:, 1]).astype(np.int64)
    lwp = (w_dur * frac[:, 2]).astype(np.int64)
    lwp_pre = lwp // 2
    unatt = (w_dur * frac[:, 3] * 0.2).astype(np.int64)
    useful = spin - lhp - lwp - unatt
    halted = (w_dur * frac[:, 4]).astype(np.int64)
    waits = _frame(
        "waits",
        {
            "vm": w_vm,
            "lock": rng.choice(locks, size=n_waits),
            "vcpu": w_vcpu,
            "start": w_start,
            "end": w_start + w_dur,
            "dur": w_dur,
            "spin_ns": spin,
            "spin_useful_ns": useful,
            "waste_lhp_ns": lhp,
            "waste_lwp_ns": lwp,
            "waste_lwp_preempted_ns": lwp_pre,
            "waste_lwp_halted_ns": lwp - lwp_pre,
            "spin_unattributed_ns": unatt,
            "halted_ns": halted,
            "preempted_ns": w_dur - spin - halted,
            "handoff": rng.random(n_waits) < 0.5,
            "truncated": np.zeros(n_waits, dtype=bool),
        },
    )
    tables["waits"] = waits
    h_vm, h_vcpu = pick_lane(n_waits)
    h_start = rng.integers(0, span_ns - 10_000, size=n_waits)
    h_dur = rng.lognormal(np.log(2_000), 0.8, size=n_waits).astype(np.int64) + 1
    tables["holds"] = _frame(
        "holds",
        {
            "vm": h_vm,
            "lock": rng.choice(locks, size=n_waits),
            "vcpu": h_vcpu,
            "start": h_start,
            "end": h_start + h_dur,
            "dur": h_dur,
            "inferred": np.zeros(n_waits, dtype=bool),
            "truncated": np.zeros(n_waits, dtype=bool),
        },
    )
    pct = [
        pl.col("dur").quantile(q).cast(pl.Int64).alias(f"wait_p{int(q * 100)}_ns") for q in (0.5, 0.9, 0.99)
    ]
    tables["waste_by_lock"] = _frame(
        "waste_by_lock",
        waits.group_by("vm", "lock")
        .agg(
            (pl.len() * 3).alias("n_acquisitions"),
            pl.len().alias("n_contended"),
            *[pl.col(c).sum() for c in SPLIT],
            *pct,
            pl.col("dur").max().alias("wait_max_ns"),
        )
        .to_dict(),
    )
    running = (
        tables["vcpu_states"]
        .filter(pl.col("state") == "running")
        .group_by("vm", "vcpu")
        .agg(pl.col("dur").sum())
        if with_states
        else pl.DataFrame(
            {"vm": [v for v, _ in lanes], "vcpu": [c for _, c in lanes], "dur": [None] * len(lanes)}
        )
    )
    by_vcpu = waits.group_by("vm", "vcpu").agg(
        *[pl.col(c).sum() for c in SPLIT], pl.lit(0).alias("spin_undecided_ns")
    )
    by_vcpu = by_vcpu.join(running.rename({"dur": "running_ns"}), on=["vm", "vcpu"], how="left")
    tables["waste_by_vcpu"] = _frame("waste_by_vcpu", by_vcpu.to_dict())
    tables["waste_by_vm"] = _frame(
        "waste_by_vm",
        by_vcpu.group_by("vm")
        .agg(*[pl.col(c).sum() for c in [*SPLIT, "spin_undecided_ns", "running_ns"]])
        .to_dict(),
    )

    for kind in ("lhp", "lwp") if with_states else ():
        i_vm, i_vcpu = pick_lane(n_incidents)
        i_start = rng.integers(0, span_ns - 5_000_000, size=n_incidents)
        i_dur = rng.lognormal(np.log(1_000_000), 0.7, size=n_incidents).astype(np.int64) + 1
        n_w = rng.integers(0, 4, size=n_incidents)
        common = {
            "vm": i_vm,
            "lock": rng.choice(locks, size=n_incidents),
            "start": i_start,
            "end": i_start + i_dur,
            "dur": i_dur,
            "n_waiters": n_w,
            "waste_ns": (i_dur * n_w * rng.random(n_incidents)).astype(np.int64),
            "harmful": n_w > 0,
            "truncated": np.zeros(n_incidents, dtype=bool),
        }
        states = rng.choice(["preempted", "halted"], size=n_incidents, p=[0.8, 0.2])
        if kind == "lhp":
            common |= {
                "holder": i_vcpu,
                "holder_state": states,
                "holder_guessed": rng.random(n_incidents) < 0.3,
            }
        else:
            common |= {"next_owner": i_vcpu, "next_owner_state": states, "pcpu_wait_ns": i_dur // 2}
        tables[f"{kind}_incidents"] = _frame(f"{kind}_incidents", common)

    n_conv = max(1, n_incidents * 2)
    c_start = rng.integers(0, span_ns - 1_000_000, size=n_conv)
    tables["convoys"] = _frame(
        "convoys",
        {
            "vm": rng.choice(vms, size=n_conv),
            "lock": rng.choice(locks, size=n_conv),
            "start": c_start,
            "end": c_start + rng.integers(1_000, 1_000_000, size=n_conv),
            "length": 2 + rng.geometric(0.3, size=n_conv) - 1,
            "peak_waiters": rng.integers(2, n_vcpus + 1, size=n_conv),
            "cause": rng.choice(["lhp", "lwp", "none"], size=n_conv),
        },
    )
    p_vm, p_vcpu = pick_lane(n_pause_exits)
    tables["pause_exits"] = _frame(
        "pause_exits",
        {
            "ts": np.sort(rng.integers(0, span_ns, size=n_pause_exits)),
            "vm": p_vm,
            "vcpu": p_vcpu,
            "n_siblings_preempted": rng.integers(0, n_vcpus, size=n_pause_exits),
        },
    )
    k_vm, k_vcpu = pick_lane(n_kicks)
    lat = rng.lognormal(np.log(20_000), 1.0, size=n_kicks).astype(np.int64)
    tables["kicks"] = _frame(
        "kicks",
        {
            "ts": np.sort(rng.integers(0, span_ns, size=n_kicks)),
            "vm": k_vm,
            "vcpu": k_vcpu,
            "target": (k_vcpu + 1) % n_vcpus,
            "latency_ns": pl.Series(lat).scatter([0], [None]) if n_kicks else lat,
        },
    )
    reasons = ["PAUSE", "HLT", "HYPERCALL", "EXTERNAL_INTERRUPT", "EPT_VIOLATION"]
    counts = np.array([n_pause_exits, n_kicks * 2, n_kicks, n_kicks * 3, 7])
    tables["exit_reasons"] = _frame(
        "exit_reasons",
        {
            "reason": reasons,
            "count": counts,
            "share_pct": 100.0 * counts / counts.sum(),
            "total_ns": counts * 1_500,
            "min_ns": [400] * 5,
            "avg_ns": [1_500] * 5,
            "max_ns": [90_000] * 5,
        },
    )
    totals = {c: int(waits[c].sum()) for c in SPLIT}
    totals |= {
        "wait_halted_ns": int(waits["halted_ns"].sum()),
        "wait_preempted_ns": int(waits["preempted_ns"].sum()),
        "n_contended": n_waits,
        "n_acquisitions": 3 * n_waits,
        "n_convoys": n_conv,
        "convoy_len_max": int(tables["convoys"]["length"].max()),
        "n_truncated": 0,
        "n_pause_exits": n_pause_exits,
        "n_kicks": n_kicks,
    }
    unavailable = []
    if with_states:
        totals |= {
            "n_lhp": n_incidents,
            "n_lhp_harmful": int(tables["lhp_incidents"]["harmful"].sum()),
            "n_lwp": n_incidents,
            "n_lwp_preempted": int((tables["lwp_incidents"]["next_owner_state"] == "preempted").sum()),
            "n_lwp_halted": int((tables["lwp_incidents"]["next_owner_state"] == "halted").sum()),
        }
        fidelity = dict.fromkeys(totals, "exact")
    else:
        for k in (
            "waste_lhp_ns",
            "waste_lwp_ns",
            "waste_lwp_preempted_ns",
            "waste_lwp_halted_ns",
            "spin_useful_ns",
        ):
            totals.pop(k)
        how = "trace-cmd record -e sched:sched_switch -e sched:sched_wakeup -e kvm:kvm_exit (on the host)"
        for m in (
            "n_lhp",
            "n_lhp_harmful",
            "n_lwp",
            "n_lwp_preempted",
            "n_lwp_halted",
            "waste_lhp_ns",
            "waste_lwp_ns",
        ):
            unavailable.append(Unavailable(m, ["sched:sched_switch", "sched:sched_wakeup"], how))
        fidelity = dict.fromkeys(totals, "guest-only")
    return Analysis(tables=tables, summary=Summary(totals=totals, fidelity=fidelity, unavailable=unavailable))


def fake_trace(
    analysis: Analysis, span_ns: int = 50_000_000, n_events: int = 1000, view: str = "full"
) -> Trace:
    """A Trace whose meta matches fake_analysis (events are a token few: the report reads meta and counts)."""
    vms = sorted({*analysis.table("waits")["vm"].to_list()})
    n_vcpus = int(analysis.table("waits")["vcpu"].max() or 0) + 1
    events = conform_events(
        pl.DataFrame(
            {
                "ts": np.linspace(0, span_ns - 1, n_events).astype(np.int64),
                "kind": ["vm_exit"] * n_events,
                "origin": ["sim"] * n_events,
            }
        )
    )
    meta = TraceMeta(
        source=["fake.parquet"],
        format="sim",
        view=view,
        t_start=0,
        t_end=span_ns,
        n_pcpus=4,
        vms={vm: VmInfo(n_vcpus=n_vcpus, lock_kind="fifo", lock_algorithm="ticket") for vm in vms},
        problems={"malformed_lines": 2, "samples": ["host.txt:17: cannot parse"]},
    )
    return Trace(events=events, meta=meta)


LOCK = 0xFFFF_8880_0000_1000


def ten_million_event_scale() -> tuple[Trace, Analysis]:
    """A trace and analysis as big as a 10M-event run gives (10 s, 32 vCPUs, 1M waits)."""
    span = 10_000_000_000
    analysis = fake_analysis(
        n_vms=4,
        n_vcpus=8,
        span_ns=span,
        n_locks=200,
        n_waits=1_000_000,
        n_states_per_lane=40_000,
        n_incidents=20_000,
        n_pause_exits=500_000,
        n_kicks=200_000,
    )
    return fake_trace(analysis, span_ns=span), analysis


def lhp_trace() -> Trace:
    """One VM, two vCPUs, one lock: vCPU 0 is preempted holding it while vCPU 1 spins (one LHP incident)."""
    rows = [
        (0, "vcpu_run", 0, 0, None, None),
        (0, "vcpu_run", 1, 1, None, None),
        (1000, "lock_acquire", 0, None, LOCK, None),
        (2000, "vm_exit", 0, 0, None, "EXTERNAL_INTERRUPT"),
        (2000, "vcpu_preempt", 0, 0, None, "R+"),
        (3000, "lock_contend", 1, None, LOCK, "SPIN"),
        (4000, "vm_exit", 1, 1, None, "PAUSE"),
        (4500, "vm_entry", 1, 1, None, None),
        (9000, "vcpu_run", 0, 0, None, None),
        (9000, "vm_entry", 0, 0, None, None),
        (9500, "lock_release", 0, None, LOCK, None),
        (9800, "lock_acquire", 1, None, LOCK, None),
        (10500, "lock_release", 1, None, LOCK, None),
    ]
    df = pl.DataFrame(
        rows,
        schema=["ts", "kind", "vcpu", "pcpu", "lock", "reason"],
        orient="row",
        schema_overrides={"lock": pl.UInt64},
    )
    events = conform_events(df.with_columns(pl.lit("vm0").alias("vm"), pl.lit("sim").alias("origin")))
    meta = TraceMeta(
        source=["lhp.parquet"],
        format="sim",
        view="full",
        t_start=0,
        t_end=12_000,
        n_pcpus=2,
        vms={"vm0": VmInfo(2, "fifo", "ticket")},
    )
    return Trace(events, meta)
