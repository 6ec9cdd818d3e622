"""How close the guest-inferred level gets to the truth, from guest-view ftrace text.

Each run is simulated, rendered as each VM's guest ftrace file (lock contention, ticks,
steal samples: what `pvtrace record --guest` captures in one VM), ingested and analyzed
with default options, one VM at a time (a tenant sees one VM; each file is on its guest
clock, shifted back to the host clock here to match the truth's incidents).

    python tests/analyze/guest_accuracy_cases.py > /tmp/guest-accuracy.md   (the table of docs/accuracy.md)
"""

from __future__ import annotations

import sys
import tempfile
from functools import cache
from pathlib import Path

import polars as pl

from pvtrace.analyze import analyze
from pvtrace.analyze.accuracy import harmful_lhp_counts, pooled, relative_error, scores_of
from pvtrace.ingest.load import load
from pvtrace.simulate.render import to_ftrace
from pvtrace.simulate.render.identities import hashed_lock_addresses
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import Scenario, load_preset
from pvtrace.simulate.ticks import GUEST_HZ, state_intervals
from pvtrace.simulate.views import select_view

ALGORITHMS = ("tas", "ticket", "pv-ticket", "pv-qspinlock")
PRESETS = ("lhp-demo", "overcommit-2x", "seed-table", "kernel-build", "tlb-shootdown")
TOTALS = ("waste_lhp_ns", "spin_ns", "wait_preempted_ns", "wait_halted_ns")
OUTCOMES = ("meet", "range", "declined", "miss")


def _shifted(table: pl.DataFrame, offset: int, locks: dict[int, int]) -> pl.DataFrame:
    """Incidents of a guest file back on the host clock, with the simulator's lock ids."""
    return table.with_columns(
        pl.col("start") + offset,
        pl.col("end") + offset,
        pl.col("lock").replace_strict(locks, default=None, return_dtype=pl.UInt64),
    )


def visible(truth_lhp: pl.DataFrame, iv: pl.DataFrame, period: int) -> pl.DataFrame:
    """Truth incidents with `visible`: the holder's whole stretch of not running (preempted or
    halted) lasts two ticks or more, so it spans a missed tick and can be placed."""
    down = iv.filter(pl.col("state") != "running").select(
        pl.col("vm").cast(pl.String), pl.col("vcpu").alias("holder"), pl.col("start").alias("ps"), "end"
    )
    enc = (
        truth_lhp.with_columns(pl.col("vm").cast(pl.String))
        .sort("start")
        .join_asof(
            down.sort("ps"),
            left_on="start",
            right_on="ps",
            by=["vm", "holder"],
            strategy="backward",
            suffix="_p",
            check_sortedness=False,
        )
    )
    return enc.with_columns(
        ((pl.col("end_p") - pl.col("ps")) >= 2 * period).fill_null(False).alias("visible")
    )


def guest_run(scenario: Scenario, seed: int, hz: int = GUEST_HZ, lock_kind: str | None = None) -> dict:
    """One run: harmful-LHP match counts (against every true incident and against those the guest
    can see) and found/true totals, summed over the VMs' guest files."""
    trace, truth = simulate_trace(scenario.replace(vm={"guest_hz": hz}), seed=seed)
    view = select_view(trace, "guest")
    offsets = trace.meta.clock.get("guest_offset_ns") or {}
    hashed = hashed_lock_addresses(trace.events.filter(pl.col("lock").is_not_null()).select("vm", "lock"))
    found: dict[str, int | None] = dict.fromkeys((*TOTALS, "preempted_ns", "unseen_ns"), 0)
    lhp_found, per_vm = [], []
    iv = state_intervals(trace.events, truth.t_end)
    harmful = visible(truth.lhp_incidents.filter(pl.col("harmful")), iv, 1_000_000_000 // hz)
    pre = iv.filter(pl.col("state") == "preempted").select(
        pl.col("vm").cast(pl.String), (pl.col("end") - pl.col("start")).alias("d")
    )
    levels, limited, partial = set(), [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for vm in trace.meta.vms:
            path = Path(tmp) / f"g-{vm}.txt"
            with path.open("w") as out:
                to_ftrace(view, out, side="guest", vm=vm)
            result = analyze(load([path], vm_name=vm), lock_kind=lock_kind)
            s = result.summary
            levels.add(s.extra["level"])
            info = s.extra.get("guest_preemption") or {}
            if info.get("limited") or info.get("halting"):
                limited.append(info.get("limited") or info["halting"])
            partial |= {k for k in (s.extra.get("partial") or {}) if k in TOTALS}
            for k in TOTALS:
                found[k] = None if found[k] is None or k not in s.totals else found[k] + s.totals[k]
            # the level's preempted time: the steal samples' count where it has them
            steal = info.get("steal_ns")
            found["preempted_ns"] += int(steal if steal is not None else info.get("preempted_ns") or 0)
            found["unseen_ns"] += int(info.get("unseen_ns") or 0)
            mine = hashed.filter(pl.col("vm") == vm)
            locks = dict(zip([int(h, 16) for h in mine["hashed"]], mine["lock"].to_list(), strict=True))
            mine_lhp = _shifted(result.table("lhp_incidents"), int(offsets.get(vm, 0)), locks)
            lhp_found.append(mine_lhp)
            per_vm.append(
                _vm_figures(
                    vm, s, info, mine_lhp, harmful.filter(pl.col("vm") == vm), pre.filter(pl.col("vm") == vm)
                )
            )
    t = truth.summary.totals
    true = {k: t[k] for k in TOTALS}
    true["preempted_ns"] = int(pre["d"].sum())
    true["unseen_ns"] = int(pre.filter(pl.col("d") < 2 * (1_000_000_000 // hz))["d"].sum())
    true["waste_lhp_visible_ns"] = int(harmful.filter("visible")["waste_ns"].sum())
    lhp = pl.concat(lhp_found).with_columns(pl.col("vm").cast(pl.String))
    seen = harmful_lhp_counts(lhp, harmful.filter("visible"))
    return {
        "seed": seed,
        "levels": sorted(levels),
        "limited": limited,
        "partial": sorted(partial),
        "lhp": harmful_lhp_counts(lhp, harmful),
        # precision against every true incident, recall against those the guest can see
        "lhp_visible": {**seen, "found_matched": harmful_lhp_counts(lhp, harmful)["found_matched"]},
        "found": found,
        "true": true,
        "vms": per_vm,
    }


def _vm_figures(
    vm: str, summary, info: dict, lhp: pl.DataFrame, harmful: pl.DataFrame, pre: pl.DataFrame
) -> dict:
    """One VM's guest file alone against that VM's truth: what a tenant gets."""
    lhp = lhp.with_columns(pl.col("vm").cast(pl.String))
    seen = harmful_lhp_counts(lhp, harmful.filter("visible"))
    every = harmful_lhp_counts(lhp, harmful)
    steal = info.get("steal_ns")
    return {
        "vm": vm,
        "declined": bool(info.get("limited") or info.get("halting")),
        "precision": scores_of(every)["precision"],
        "recall_visible": scores_of(seen)["recall"],
        "waste_lhp_ns": summary.totals.get("waste_lhp_ns"),
        "range": info.get("lhp_waste_range_ns"),
        "true_waste_lhp_ns": int(harmful["waste_ns"].sum()),
        "preempted_ns": steal if steal is not None else info.get("preempted_ns"),
        "true_preempted_ns": int(pre["d"].sum()),
    }


def vm_outcome(v: dict) -> str:
    """meet (the targets, LHP waste against every true harmful incident of the VM), range (LHP waste
    given as a range that holds the truth within the 15%), declined, or miss."""
    if v["declined"]:
        return "declined"
    pre = relative_error(v["preempted_ns"], v["true_preempted_ns"])
    waste = relative_error(v["waste_lhp_ns"], v["true_waste_lhp_ns"])
    if (
        v["precision"] >= 0.9
        and v["recall_visible"] >= 0.9
        and waste is not None
        and abs(waste) <= 0.15
        and pre is not None
        and abs(pre) <= 0.10
    ):
        return "meet"
    if v["range"] and 0.85 * v["range"][0] <= v["true_waste_lhp_ns"] <= 1.15 * v["range"][1]:
        return "range"
    return "miss"


@cache
def figures(
    kind: str,
    name: str,
    algorithm: str | None,
    seeds: tuple[int, ...],
    hz: int = GUEST_HZ,
    lock_kind: str | None = None,
    ple: bool | None = None,
) -> dict:
    """Pooled figures of one case: kind "preset" (name = preset) or "workload" (accuracy_cases)."""
    if kind == "preset":
        base = load_preset(name)
    else:
        from accuracy_cases import scenario

        base = scenario(name, algorithm, 3)
    if algorithm is not None and kind == "preset":
        base = base.replace(lock={"algorithm": algorithm})
    if ple is not None:
        base = base.replace(hypervisor={"ple": ple})
    every = [guest_run(base, seed, hz, lock_kind) for seed in seeds]
    rs = [r for r in every if not r["limited"]]  # runs where the level gave numbers

    def err(key: str, true_key: str | None = None) -> float | None:
        values = [r["found"][key] for r in rs]
        if not rs or any(v is None for v in values):
            return None
        e = relative_error(sum(values), sum(r["true"][true_key or key] for r in rs))
        return None if e is None else round(e, 4)

    def share(side: str) -> float:  # unseen preempted time / preempted time, over every run
        total = sum(r[side]["preempted_ns"] for r in every)
        return round(sum(r[side]["unseen_ns"] for r in every) / total, 4) if total else 0.0

    lhp = scores_of(pooled([r["lhp"] for r in rs])) if rs else None
    seen = scores_of(pooled([r["lhp_visible"] for r in rs])) if rs else None
    return {
        "n_runs": len(every),
        "n_declined": len(every) - len(rs),
        "levels": sorted({lvl for r in every for lvl in r["levels"]}),
        "limited": not rs,
        "why": sorted({why.split(":")[0] for r in every for why in r["limited"]}),
        "n_true": sum(r["lhp"]["n_true"] for r in every),
        "n_visible": seen["n_true"] if seen else 0,
        "precision": round(lhp["precision"], 4) if lhp else None,
        "recall": round(lhp["recall"], 4) if lhp else None,
        "recall_visible": round(seen["recall"], 4) if seen else None,
        "waste_lhp_err": err("waste_lhp_ns"),
        "waste_lhp_visible_err": err("waste_lhp_ns", "waste_lhp_visible_ns"),
        "spin_err": err("spin_ns"),
        "wait_preempted_err": err("wait_preempted_ns"),
        "preempted_err": relative_error(
            sum(r["found"]["preempted_ns"] for r in every), sum(r["true"]["preempted_ns"] for r in every)
        ),
        "unseen_found": share("found"),
        "unseen_true": share("true"),
        "vm_outcomes": {k: sum(vm_outcome(v) == k for r in every for v in r["vms"]) for k in OUTCOMES},
    }


def _pct(v: float | None) -> str:
    return "unavailable" if v is None else f"{100 * v:+.1f}%"


Row = tuple[str, str, str | None, tuple[int, ...], int, str | None, bool | None]


def table(rows: list[Row]) -> str:
    out = [
        "| case | lock | PLE | HZ | --lock-kind | runs (declined) | harmful LHP: true (seeable) | precision | "
        "recall seeable (all) | LHP waste vs all (seeable) | spin | preempted time | unseen share: level / truth | "
        "VMs alone: meet / range / declined / miss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, name, algo, seeds, hz, lock_kind, ple in rows:
        f = figures(kind, name, algo, seeds, hz, lock_kind, ple)
        if f["limited"]:
            cells = ["declined"] * 4
        else:
            cells = [
                f"{100 * f['precision']:.1f}%",
                f"{100 * f['recall_visible']:.1f}% ({100 * f['recall']:.1f}%)",
                f"{_pct(f['waste_lhp_err'])} ({_pct(f['waste_lhp_visible_err'])})",
                _pct(f["spin_err"]),
            ]
        lead = [
            name,
            algo or load_preset(name).lock.algorithm,  # a preset row: the preset's own lock
            "default" if ple is None else ("on" if ple else "off"),
            str(hz),
            lock_kind or "(default)",
            f"{f['n_runs']} ({f['n_declined']})",
            f"{f['n_true']} ({f['n_visible']})" if not f["limited"] else str(f["n_true"]),
        ]
        tail = [
            _pct(f["preempted_err"]),
            f"{100 * f['unseen_found']:.0f}% / {100 * f['unseen_true']:.0f}%",
            " / ".join(str(f["vm_outcomes"][k]) for k in OUTCOMES),
        ]
        out.append("| " + " | ".join(lead + cells + tail) + " |")
    return "\n".join(out)


def _kind(algorithm: str | None) -> str:
    return "unfair" if algorithm == "tas" else "fifo"


PRESET_SEEDS = (1, 2, 3, 4, 5, 6)
VM_SEEDS = tuple(range(1, 13))
DOC_ROWS: list[Row] = [
    *[("preset", p, None, PRESET_SEEDS, hz, None, None) for p in PRESETS for hz in (1000, 250)],
    ("preset", "lhp-demo", None, PRESET_SEEDS, 1000, "fifo", None),
    ("preset", "seed-table", None, PRESET_SEEDS, 1000, "fifo", None),
    *[("preset", "lhp-demo", a, (1, 2, 3), 1000, None, ple) for ple in (False, True) for a in ALGORITHMS],
    *[("workload", w, a, (21, 22), GUEST_HZ, None, None) for w in ("no-ple", "ple") for a in ALGORITHMS],
    # one tenant, one VM: the per-VM outcomes over twelve seeds
    *[
        ("preset", "lhp-demo", a, VM_SEEDS, 1000, None, ple)
        for ple in (False, True)
        for a in ("ticket", "tas")
    ],
    *[("preset", "overcommit-2x", None, VM_SEEDS, 1000, None, ple) for ple in (False, True)],
]

INTRO = """## Guest-inferred view (ticks and steal samples)

What a tenant can capture alone: each VM's guest ftrace text with lock contention, the
scheduler ticks and the steal samples (`pvtrace record --guest`), rendered by the simulator
(ticks every 1/HZ, the scenario key vm.guest_hz, while a vCPU runs guest code and is not idle; the missed one at once when it
resumes; steal in USER_HZ units every 100 ms as /proc/stat shows it: each CPU's counter moves at
its own tick and counts since boot; with `pv_spinlocks` from the lock algorithm),
ingested and analyzed with default options one VM at a time
(`python tests/analyze/guest_accuracy_cases.py`; the truth covers the same window).

How it is scored. A true harmful LHP incident is *seeable* when its holder's whole stretch of
not running lasts two ticks or more (it spans a missed tick and can be placed); shorter ones
the level says it cannot count. Precision is against every true incident; recall against the
seeable ones (against all in brackets); LHP waste against every true harmful incident's waste
(the seeable ones' in brackets): the level counts every incident whose holder missed a tick,
stops of one to two ticks included (placed to within a tick), so the seeable waste alone leaves
out incidents it finds (on a VM whose incidents are mostly in such stops the level's waste is
several times the seeable one's and close to all of it). Preempted time
is the level's steal total against the vCPUs' true time runnable but not running. The unseen share is the level's `unseen_ns` (steal outside intervals of two
ticks or more) over its steal, against the truth's time in preemptions shorter than two ticks
over its preempted time. "declined": the level gives no spin or incident metric (the runs'
reason: under half the steal placeable, paravirt spinlocks, or PLE's yields inside waits).
overcommit-2x, seed-table, kernel-build and tlb-shootdown have PLE on (the presets' setting; the last
two also paravirt spinlocks); the workload rows are those
of the merged view at 3x overcommit. "VMs alone": what one tenant gets, each VM's file against
that VM's truth: meet (harmful-LHP precision and recall of the seeable >= 90%, LHP waste within
15% of the VM's true waste, preempted time within 10%), range (LHP waste given as a range,
analyze/guest_lwp.py, that holds the truth within 15%), declined, miss (any other number).

| case | lock | PLE | HZ | --lock-kind | runs (declined) | harmful LHP: true (seeable) | precision | recall seeable (all) | LHP waste vs all (seeable) | spin | preempted time | unseen share: level / truth | VMs alone: meet / range / declined / miss |"""


LIMITS = """Targets (issue 18): on the presets' guest text, harmful-LHP precision and recall >= 90%, LHP
waste within 15%, preempted time within 10% where it reports a number, and where HZ makes it
impossible the metric says so. What this table shows:

- **Met everywhere:** preempted time (the steal samples) within 2.5% on every row, declined or
  not; the share of the preempted time the ticks cannot place is measured within 4 points of
  the truth's on every row with ticket or test-and-set locks; at HZ=250 (4 ms ticks, the kernel
  of the machine that captured sample-traces/guest-ticks) no preset preemption lasts two ticks
  and the level declines every state metric with that reason; paravirt spinlocks are declined (their halts are invisible);
  `wait_halted_ns` is never given at this level.
- **Met on lhp-demo (ticket, the preset, and test-and-set with PLE off):** precision 100% and
  recall 100% of the seeable incidents; LHP waste -3.5% of every true incident's on the preset (6
  seeds, one declined: see PLE off below; +9.1% of the seeable ones'), -8.5% with test-and-set. Holders that took their lock
  uncontended, which no guest event names, are inferred (analyze/likely_holder.py): a holder that
  resumes at the tick the waiter gets the lock, or that queues for the lock again inside the
  waiter's spin, is a candidate; the episodes of one free stretch are judged together.
- **One VM alone (the 12-seed rows, what a tenant gets).** lhp-demo with PLE off: 23 of 24 VMs
  meet the targets with ticket locks and 23 of 24 with test-and-set. Against the seeable waste
  alone several of them miss, though incident by incident the found waste matches the true one:
  much of those VMs' waste lies in stops of one to two ticks, which the level finds and the
  seeable set leaves out. The other two: ticket seed 2 vm1 is declined by the yield test's chance
  alarm (7 short gaps inside waits where 2.6 are expected, p = 0.016; over these 48 VMs the gaps
  inside waits come as the rate outside predicts, 97 short ones for 96.4), and test-and-set seed
  2 vm1 misses (LHP waste -38%). overcommit-2x without PLE (4 vCPUs a VM): the holder guess names
  vCPUs that stopped holding other locks while the fifo lock had been handed to a stopped waiter
  (lock-waiter preemption): precision 69%, LHP waste +6% pooled and up to +553% on one VM. A
  waiter that takes the lock as it resumes from a stop inside its wait says nothing of when it
  was released (analyze/guest_preemption.py), and an incident during which a second waiter of the
  lock was stopped inside its wait is ambiguous (analyze/guest_lwp.py): LHP waste is a range,
  from without those incidents to with them, marked partial. Two more reasons widen the range
  (both only when they move it by more than 15%): a waiter that stops inside an incident is
  placed only to a tick, and so is the spin it did before (analyze/guest_stop_slack.py); and a
  holder guess that runs again while the lock's running first waiter keeps waiting, with another
  vCPU stopped through that instant, may be the wrong one of two stopped vCPUs (the true holder
  took the lock uncontended): the waiters' wait until the other resumes may be LHP waste too
  (analyze/guest_late_release.py). 4 of the 24 VMs meet the targets by their number; 18 get a
  range that holds the truth within 15%; 2 miss: seed 7 vm1 (LHP waste +3%, but precision 50%:
  the guess named the other of two vCPUs stopped at once, which resumed 60 us before the holder)
  and seed 12 vm1 (truth 38% above the range: a holder that took the lock uncontended and stopped
  before the first waiter came, whose incident the level does not find; the running sibling is
  named instead, analyze/likely_holder.py). The ranges are wide (their low end is often 0), but
  not wrong. On the no-ple workload 11 of the 12 VMs get a range that holds the truth (ticket
  +26.3% pooled, precision 77%). With two vCPUs a VM
  (lhp-demo) no incident is ambiguous.
- **PLE on (overcommit-2x, seed-table, lhp-demo with PLE, the ple workload): declined, as
  the targets ask where the ticks cannot see.** PLE's directed yields preempt a spinning waiter,
  mostly for well under a tick, so the ticks never show most of them and their time would count
  as spin and LHP waste (before: spin +22% to +170%, LHP waste +48% to +146% of the seeable
  incidents'). The host ends a slice whatever the guest runs, so without PLE the gaps come as
  often per running time inside lock waits as outside; the level tests the gaps inside waits
  (all, and those missing one tick only) against that rate, and declines spin and what rests on
  it when the excess is significant and stands for more than 10% of the apparent spin
  (analyze/guest_yields.py): every run above with PLE on is declined on at least one of its VMs
  (a run counts as declined when one is). A short capture may show too few gaps inside waits
  for that; the yields still show at the handoffs: a directed yield runs the preempted holder
  the instant its waiter stops, so the waiter takes the lock tens of microseconds after the
  holder resumes, where a spinning waiter takes it as quickly as its plain waits last; the
  level declines when more handoffs after a resume come late (after 90% of the plain waits)
  than 20% explains. Per VM, seeds 1 to 12, each VM's file analyzed alone: with PLE on, 42 of
  the 48 lhp-demo VMs (ticket, test-and-set) are declined, 4 meet the targets and 2 (test-and-set
  seed 2 vm0, ticket seed 8 vm0), whose incidents are all found, get a range that holds the truth:
  their point estimate is +50%, because with PLE the host stops a spinning waiter microseconds into
  its spin, while the level places the stop at the middle of its tick window; every
  overcommit-2x VM is declined. With PLE off one VM of the 48 lhp-demo VMs is declined (above); none of overcommit-2x
  or of the no-ple workload.
- **Lock kind.** ftrace text does not say whether a lock is fifo; on these presets the kind is
  decided from the trace and `--lock-kind fifo` changes nothing.
- **Several VMs at once.** Analyze each VM's guest file on its own (as here): files of
  several guests are on different clocks.
"""  # the prose under the table (its figures are those of the table above)


def section() -> str:
    """The docs/accuracy.md section of this level (the table is computed here)."""
    return INTRO.rsplit("\n", 1)[0] + "\n" + table(DOC_ROWS) + "\n\n" + LIMITS


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    print(section())
