"""Which totals cover only part of the trace, and why: the `partial` list of the summary.

A total computed over some locks only (LWP waste and convoys need each lock's
kind; undecided locks are left out) is still printed, but never as if it were
the whole: the summary's `partial` maps each such metric to the parts it
lacks, how much of the spin they hold, and the option that completes it.
"""

from __future__ import annotations

import polars as pl

from pvtrace.analyze.fidelity import LWP_KEYS

KIND_FIX = (
    "pass --lock-kind fifo (ticket, queued spinlocks) or unfair (test-and-set) if you know the "
    "guest's spinlock algorithm"
)
CONVOY_METRICS = ("n_convoys", "convoy_len_max")


def undecided_locks(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """vm, lock of every lock whose kind is undecided, with its spin (0 when none was measured)."""
    kinds = tables["lock_kinds"].filter(pl.col("kind") == "undecided").select("vm", "lock")
    spin = tables["waste_by_lock"].select("vm", "lock", pl.col("spin_ns").fill_null(0))
    return kinds.join(spin, on=["vm", "lock"], how="left").with_columns(pl.col("spin_ns").fill_null(0))


def kind_gaps(
    tables: dict[str, pl.DataFrame], *, holders_inferred: bool
) -> tuple[dict[str, pl.DataFrame], dict[str, list[dict]], bool]:
    """Drop convoys on undecided locks where holders are inferred (their runs end at takes the
    kind decides), and say which totals lack those locks.

    Returns the tables, the partial entries per metric, and whether LWP is unavailable outright
    (no contended lock has a known kind: there is nothing to give even in part; so are convoys
    when holders are inferred, analyze.fidelity.plan).
    """
    und = undecided_locks(tables)
    contended = tables["waste_by_lock"].filter(pl.col("n_contended") > 0)
    if und.height == 0:
        return tables, {}, False
    # per lock, LWP on an undecided lock is unavailable, not 0
    lwp = [c for c in LWP_KEYS if c.startswith("waste_")]
    tables["waste_by_lock"] = (
        tables["waste_by_lock"]
        .join(
            und.select("vm", "lock", pl.lit(True).alias("_und")),
            on=["vm", "lock"],
            how="left",
            maintain_order="left",
        )
        .with_columns(pl.when(pl.col("_und").is_null()).then(pl.col(c)).alias(c) for c in lwp)
        .drop("_und")
    )
    decided = contended.join(und.select("vm", "lock"), on=["vm", "lock"], how="anti")
    partial: dict[str, list[dict]] = {}
    total_spin = int(contended["spin_ns"].fill_null(0).sum() or 0)
    und_spin = int(und["spin_ns"].sum() or 0)
    share = round(100.0 * und_spin / total_spin, 2) if total_spin else None
    lwp_unavailable = decided.height == 0
    if lwp_unavailable and und_spin > 0:
        part = {
            "missing": "LWP: needs the lock kind (no contended lock's kind could be decided)",
            "spin_ns_on_them": und_spin,
            "spin_pct_on_them": share,
            "fix": KIND_FIX,
        }
        partial["spin_useful_ns"] = [{**part, "missing": "includes the LWP waste it cannot separate"}]
        partial["spin_waste"] = [part]
    elif und_spin > 0:
        part = {
            "missing": f"LWP on {und.height} lock(s) of undecided kind",
            "spin_ns_on_them": und_spin,
            "spin_pct_on_them": share,
            "fix": KIND_FIX,
        }
        for metric in (*LWP_KEYS, "spin_waste"):
            partial[metric] = [part]
        # useful spin is not short of that LWP waste but holds it: said so, it is not read as useful
        partial["spin_useful_ns"] = [
            {**part, "missing": f"includes the LWP waste of {und.height} lock(s) of undecided kind"}
        ]
    if holders_inferred:
        conv = tables["convoys"]
        kept = conv.join(und.select("vm", "lock"), on=["vm", "lock"], how="anti")
        dropped = conv.height - kept.height
        tables["convoys"] = kept  # in place: the other tables may live on disk (analyze/partitioned.py)
        if (und_spin > 0 or dropped) and not lwp_unavailable:
            part = {
                # not "how many are missing": which hand-offs a convoy spans depends on the kind
                "missing": f"convoys on {und.height} lock(s) of undecided kind not counted "
                f"(their number depends on the kind; {dropped:,} found there without it)",
                "convoys_found_without_kind": dropped,
                "spin_ns_on_them": und_spin,
                "spin_pct_on_them": share,
                "fix": KIND_FIX,
            }
            for metric in CONVOY_METRICS:
                partial[metric] = [part]
    return tables, partial, lwp_unavailable


def add_parts(partial: dict, metric: str, *parts: dict) -> None:
    """Append parts (missing, fix, ...) to what `partial` says a metric leaves out."""
    partial[metric] = [*partial.get(metric, []), *parts]


def partial_why(extra: dict, key: str) -> str:
    """What a total the summary (extra) lists as partial leaves out; '' when it is whole."""
    parts = (extra.get("partial") or {}).get(key)
    return "; ".join(p["missing"] for p in parts) if parts else ""


def partial_note(extra: dict, key: str) -> str:
    """' (partial: what it lacks)' for a total the summary lists as partial, else '': every view
    that shows the total shows this with it, so a part is never read as the whole."""
    why = partial_why(extra, key)
    return f" (partial: {why})" if why else ""
