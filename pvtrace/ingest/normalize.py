"""Raw trace records -> canonical events (pvtrace.schema.EVENT_SCHEMA).

Each raw row (ingest.raw.RAW_SCHEMA: one record line) becomes zero, one or two
events through the alias table (ingest.aliases). What a row means depends on
the side that recorded it:

Host (KVM and the host scheduler; `CPU n/KVM` threads or kvm_* events):
- sched_switch: prev is a vCPU thread -> vcpu_preempt (prev_state R, R+) or
  vcpu_halt (S, D, I, ...), reason = the state; next is a vCPU thread ->
  vcpu_run. One line can give both (out before in). Neither -> task_switch
  (tid = prev, reason = prev_state, value = next pid).
- sched_wakeup / sched_wakeup_new (sched_waking when no sched_wakeup was
  recorded) of a vCPU thread -> vcpu_wake (tid = the woken thread, pcpu =
  target CPU); of another thread -> task_wakeup; a sched_waking doubled by a
  sched_wakeup, or a wake-up with success=0, -> other.
- kvm_exit -> vm_exit (reason normalized; value = the nr of the kvm_hypercall
  that follows it on its thread, if any), kvm_entry -> vm_entry,
  kvm_hypercall nr 5 -> pv_kick (target = vCPU of APIC id a1), nr 11 ->
  yield_to (target = vCPU of APIC id a0), other nrs -> other (value = nr);
  kvm_ple_window(_update) -> ple_window (value = new window);
  kvm_vcpu_wakeup -> other (reason wait/poll, value = ns).
- vm and vcpu come from the vCPU map (ingest.vcpu_map); pcpu = the line's CPU.
Guest (everything else): contention_begin -> lock_contend (reason = flags),
contention_end -> lock_acquire (value = ret), lockdep lock_acquire/acquired ->
lock_acquire (an acquire immediately followed by lock_contended on the same
thread and lock is the attempt, kept as other), lock_contended ->
lock_contend, lock_release -> lock_release (lockdep is used only when the
input has no lock:contention_* events); sched events -> task_switch /
task_wakeup. vcpu = the guest CPU, vm = the vm_name option, the input's name
(`trace-<vm>.dat` -> <vm>; see guest_vm_names), or "guest". Guest timestamps
are moved onto the host clock (ingest.clocks).
Both: `[LOST n EVENTS]` and buffer-started markers -> lost_events (host:
pcpu; guest: vcpu; value = count, null when unknown); any other event -> other
with its payload in args, counted by name.

seq is the file order (two events of one line: out, then in), and events are
sorted by (ts, seq). Everything here is vectorized in polars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from pvtrace.errors import UsageError
from pvtrace.ingest import aliases, clocks, payloads
from pvtrace.ingest.aliases import ALIASES, KVM_HC_KICK_CPU, KVM_HC_SCHED_YIELD
from pvtrace.ingest.vcpu_map import VCPU_MAP_SCHEMA, build_vcpu_map
from pvtrace.schema import EVENT_SCHEMA, conform_events

SIDES = ("auto", "host", "guest")
DEFAULT_GUEST_VM = "guest"
_WAKEUPS = ("sched_wakeup", "sched_wakeup_new")
_LOST = ("lost_events", "buffer_started")
_VCPU_THREAD = r"^CPU \d+/KVM$"

# Working columns of emitted events: the canonical ones (final types: narrow
# rows) plus the raw row and a sub-index that fix the emission order.
_OUT: dict[str, pl.DataType] = {"row": pl.Int64(), "sub": pl.Int8(), **dict(EVENT_SCHEMA)}


def _emit(df: pl.DataFrame, **cols: Any) -> pl.DataFrame:
    """Select the working event columns from df; unspecified ones are null (sub 0, args null)."""
    defaults: dict[str, Any] = {
        "row": pl.col("row"),
        "sub": pl.lit(0),
        "ts": pl.col("ts"),
        "event": pl.col("event"),
    }
    exprs = []
    for name, dtype in _OUT.items():
        value = cols.get(name, defaults.get(name))
        if value is None:
            expr = pl.lit(None, dtype=dtype)
        elif isinstance(value, pl.Expr):
            expr = value
        else:
            expr = pl.lit(value)
        exprs.append(expr.cast(dtype).alias(name))
    return df.select(exprs)


def _prepare(raw: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Plain column types, file-order row index, system prefixes stripped, timestamps filled.

    Rows without a timestamp (trimmed excerpts; lost markers at the end of a CPU)
    take the previous row's time in the same input (else the next, else 0); the
    count of such record rows is returned for the clock report.
    """
    cols = {
        "source": pl.String(),
        "comm": pl.String(),
        "tid": pl.Int32(),
        "tgid": pl.Int32(),
        "cpu": pl.Int32(),
        "ts": pl.Int64(),
        "system": pl.String(),
        "event": pl.Categorical(),
        "payload": pl.String(),
    }
    frame = raw.select(
        [
            pl.col(c).cast(t).alias(c) if c in raw.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in cols.items()
        ]
    ).with_row_index("row")
    frame = frame.with_columns(
        pl.col("row").cast(pl.Int64),
        pl.col("source").fill_null("").alias("src"),
        pl.col("payload").fill_null(""),
    )
    qualified = [e for e in frame["event"].unique().drop_nulls().to_list() if ":" in e]
    if qualified:  # `sched:sched_switch` -> sched_switch
        renamed = pl.col("event").cast(pl.String).replace({e: e.split(":", 1)[1] for e in qualified})
        frame = frame.with_columns(renamed.cast(pl.Categorical))
    n_untimed = frame.filter(pl.col("ts").is_null() & ~pl.col("event").is_in(_LOST)).height
    if frame["ts"].null_count():
        frame = frame.with_columns(pl.col("ts").forward_fill().backward_fill().over("src").fill_null(0))
    return frame, n_untimed


def _detect_sides(
    frame: pl.DataFrame, side: str | dict[str, str], user_map: pl.DataFrame | None, known: dict[str, str]
) -> pl.DataFrame:
    """One row per input source: its side and why (given, known from an earlier chunk, or detected)."""
    srcs = frame.select(pl.col("src").unique())
    if isinstance(side, str) and side != "auto":
        return srcs.with_columns(pl.lit(side).alias("side"), pl.lit("given").alias("side_how"))
    given = {**known, **side} if isinstance(side, dict) else dict(known)
    if set(srcs["src"].to_list()) <= set(given):  # every source settled (given, or by an earlier chunk)
        return srcs.with_columns(
            pl.col("src").replace_strict(given, return_dtype=pl.String).alias("side"),
            pl.lit("given").alias("side_how"),
        )
    fixed = pl.DataFrame(
        {"src": list(given), "given": list(given.values())}, schema={"src": pl.String, "given": pl.String}
    )
    return (
        srcs.join(fixed, on="src", how="left")
        .join(_sniff_sides(frame, user_map), on="src", how="left")
        .select(
            "src",
            pl.coalesce("given", "side").alias("side"),
            pl.when(pl.col("given").is_not_null())
            .then(pl.lit("given"))
            .otherwise(pl.col("side_how"))
            .alias("side_how"),
        )
    )


def _sniff_sides(frame: pl.DataFrame, user_map: pl.DataFrame | None) -> pl.DataFrame:
    """Host when a source has kvm_* events, `CPU n/KVM` threads or threads of the user map."""
    sched = pl.col("event").is_in(["sched_switch", *_WAKEUPS, "sched_waking"])
    rows = []
    srcs = frame["src"].unique().to_list()
    for src in srcs:  # a handful of inputs; no group_by: it would copy the text columns
        part = frame if len(srcs) == 1 else frame.filter(pl.col("src") == src)
        events = part["event"].unique().drop_nulls().to_list()
        names = part.select(pl.col("comm").str.contains(_VCPU_THREAD).any()).item() or (
            part.filter(sched).select(pl.col("payload").str.contains(r"CPU \d+/KVM").any()).item()
        )
        mapped = (
            user_map is not None and part.select(pl.col("tid").is_in(user_map["tid"].implode()).any()).item()
        )
        rows.append(
            {
                "src": src,
                "kvm": any(e.startswith("kvm_") for e in events),
                "names": bool(names),
                "mapped": mapped,
            }
        )
    per = pl.DataFrame(
        rows, schema={"src": pl.String, "kvm": pl.Boolean, "names": pl.Boolean, "mapped": pl.Boolean}
    )
    return per.select(
        "src",
        pl.when(pl.col("kvm") | pl.col("names") | pl.col("mapped"))
        .then(pl.lit("host"))
        .otherwise(pl.lit("guest"))
        .alias("side"),
        pl.when(pl.col("kvm"))
        .then(pl.lit("kvm events present"))
        .when(pl.col("names"))
        .then(pl.lit("CPU n/KVM threads present"))
        .when(pl.col("mapped"))
        .then(pl.lit("threads of the vCPU map present"))
        .otherwise(pl.lit("no kvm events or vCPU threads"))
        .alias("side_how"),
    )


# Parser groups (alias families): events that share a payload parser, parsed once per side.
_HOST_GROUPS = aliases.families("host")
_GUEST_GROUPS = aliases.families("guest")
_GROUPS = {**_HOST_GROUPS, **_GUEST_GROUPS}
# A field that is null exactly when a group's payload matched no known shape.
_KEY_FIELD: dict[str, str] = {
    "switch": "prev_pid", "wake": "pid", "exit": "norm_reason", "entry": "vcpu", "hypercall": "nr",
    "vcpu_wakeup": "time_ns", "ple": "window", "tsc": "offset", "contention": "lock", "lockdep": "name",
}  # fmt: skip


_EMPTY_PARSED: dict[tuple, pl.DataFrame] = {}


def _parse_groups(frame: pl.DataFrame, groups: dict[str, tuple[str, ...]]) -> dict[str, pl.DataFrame]:
    """Rows of each parser group with their payload fields added."""
    cols = [c for c in ("row", "src", "tid", "cpu", "ts", "event", "payload", "vm") if c in frame.columns]
    parsed = {}
    for group in groups:
        events = _GROUPS[group]
        parser = ALIASES[events[0]].parser
        assert parser is not None
        # each group copies only its own rows (event is Categorical: the filter is cheap)
        rows = frame.select(cols).filter(pl.col("event").is_in(list(events)))
        if rows.height:
            parsed[group] = parser(rows)
            continue
        # no row of this group: the parser's empty answer only gives the columns, and it costs a
        # few ms of per-expression overhead (the same for every chunk of a trace): kept once
        key = (group, tuple(rows.schema.items()))
        if key not in _EMPTY_PARSED:
            _EMPTY_PARSED[key] = parser(rows)
        parsed[group] = _EMPTY_PARSED[key]
    if "exit" in parsed:
        # few distinct reasons: normalize each once
        keys = ["reason", "arm_kind", "arm_class", "reason_code", "isa"]
        reasons = (
            parsed["exit"]
            .select(keys)
            .unique()
            .with_columns(
                pl.coalesce(
                    aliases.exit_reason(pl.col("reason")),
                    aliases.exit_reason_arm64(pl.col("arm_kind"), pl.col("arm_class")),
                    aliases.exit_reason_code(pl.col("reason_code"), pl.col("isa")),
                ).alias("norm_reason")
            )
        )
        parsed["exit"] = parsed["exit"].join(reasons, on=keys, how="left", nulls_equal=True)
    return parsed


def _unparsed(parsed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(event, n) of rows whose payload matched no known shape."""
    frames = [df.filter(pl.col(_KEY_FIELD[g]).is_null()).select("event") for g, df in parsed.items()]
    return pl.concat(frames) if frames else pl.DataFrame(schema={"event": pl.Categorical})


def _other(df: pl.DataFrame, **cols: Any) -> pl.DataFrame:
    return _emit(df, kind="other", args=pl.col("payload"), **cols)


def _lost(frame: pl.DataFrame, origin: str, **cols: Any) -> pl.DataFrame:
    rows = frame.filter(pl.col("event").is_in(_LOST))
    count = payloads.lost_count(pl.col("payload"))
    value = pl.when(pl.col("event") == "lost_events").then(count)
    return _emit(rows, kind="lost_events", value=value, origin=origin, **cols)


def _counted_wakes(with_wakeup: list[str]) -> pl.Expr:
    """True for the wake-up rows that count: sched_wakeup(_new), or sched_waking when
    the same input recorded no sched_wakeup (with_wakeup: the sources that did); never success=0."""
    counts = pl.col("event").is_in(_WAKEUPS) | ~pl.col("src").is_in(with_wakeup)
    return pl.col("pid").is_not_null() & counts & (pl.col("success").is_null() | (pl.col("success") != 0))


# ---------------------------------------------------------------------------- host


def _host_map(
    host: pl.DataFrame, parsed: dict[str, pl.DataFrame], user_map: pl.DataFrame | None
) -> tuple[pl.DataFrame, list[str]]:
    switch, wake = parsed["switch"], parsed["wake"]
    names = pl.concat(
        [
            host.select("tid", "comm"),
            switch.select(pl.col("prev_pid").alias("tid"), pl.col("prev_comm").alias("comm")),
            switch.select(pl.col("next_pid").alias("tid"), pl.col("next_comm").alias("comm")),
            wake.select(pl.col("pid").alias("tid"), pl.col("woken_comm").alias("comm")),
        ]
    )
    ids = pl.concat(
        [parsed[g].select("tid", pl.col("vcpu").alias("kvm_vcpu")) for g in ("exit", "entry", "ple")]
    )
    return build_vcpu_map(names, ids, host.select("tid", "tgid"), user_map)


def _hypercall_after_exit(parsed: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(row, hypercall_nr) of each kvm_exit whose thread's next KVM event is kvm_hypercall.

    A VMCALL/VMMCALL exit is followed, on the same thread and before the next
    kvm_entry, by the kvm_hypercall that says which call it was; the exit
    carries that number as its value (5 kick, 11 yield), as the simulator's do.
    """
    steps = pl.concat(
        [
            parsed["exit"].select(
                "row", "tid", pl.lit(0, pl.Int8).alias("step"), pl.lit(None, pl.Int64).alias("nr")
            ),
            parsed["entry"].select(
                "row", "tid", pl.lit(1, pl.Int8).alias("step"), pl.lit(None, pl.Int64).alias("nr")
            ),
            parsed["hypercall"].select("row", "tid", pl.lit(2, pl.Int8).alias("step"), "nr"),
        ]
    ).sort("row")
    nxt = steps.with_columns(
        pl.col("step").shift(-1).over("tid").alias("next_step"),
        pl.col("nr").shift(-1).over("tid").alias("next_nr"),
    )
    return nxt.filter((pl.col("step") == 0) & (pl.col("next_step") == 2)).select(
        "row", pl.col("next_nr").alias("hypercall_nr")
    )


def _host_events(
    host: pl.DataFrame, parsed: dict[str, pl.DataFrame], vmap: pl.DataFrame, with_wakeup: list[str]
) -> list[pl.DataFrame]:
    """Canonical events of host rows (vmap: the vCPU map)."""
    origin = "host"
    thread = vmap.select("tid", "vm", "vcpu")
    out: list[pl.DataFrame] = []

    # sched_switch: vCPU out (preempt/halt), vCPU in (run), or a plain task switch
    sw = (
        parsed["switch"]
        .join(
            thread.rename({"tid": "prev_pid", "vm": "prev_vm", "vcpu": "prev_vcpu"}),
            on="prev_pid",
            how="left",
        )
        .join(
            thread.rename({"tid": "next_pid", "vm": "next_vm", "vcpu": "next_vcpu"}),
            on="next_pid",
            how="left",
        )
    )
    ok = pl.col("prev_pid").is_not_null() & pl.col("next_pid").is_not_null()
    out += [
        _emit(
            sw.filter(ok & pl.col("prev_vm").is_not_null()),
            kind=pl.when(pl.col("prev_state").str.starts_with("R"))
            .then(pl.lit("vcpu_preempt"))
            .otherwise(pl.lit("vcpu_halt")),
            vm=pl.col("prev_vm"),
            vcpu=pl.col("prev_vcpu"),
            pcpu=pl.col("cpu"),
            reason=pl.col("prev_state"),
            tid=pl.col("prev_pid"),
            origin=origin,
        ),
        _emit(
            sw.filter(ok & pl.col("next_vm").is_not_null()),
            sub=1,
            kind="vcpu_run",
            vm=pl.col("next_vm"),
            vcpu=pl.col("next_vcpu"),
            pcpu=pl.col("cpu"),
            tid=pl.col("next_pid"),
            origin=origin,
        ),
        _emit(
            sw.filter(ok & pl.col("prev_vm").is_null() & pl.col("next_vm").is_null()),
            kind="task_switch",
            pcpu=pl.col("cpu"),
            reason=pl.col("prev_state"),
            tid=pl.col("prev_pid"),
            value=pl.col("next_pid"),
            origin=origin,
        ),
        _other(sw.filter(~ok), pcpu=pl.col("cpu"), tid=pl.col("tid"), origin=origin),
    ]

    wake = parsed["wake"]
    wk = wake.join(thread.rename({"tid": "pid"}), on="pid", how="left").with_columns(
        _counted_wakes(with_wakeup).alias("counts")
    )
    out += [
        _emit(
            wk.filter(pl.col("counts")),
            kind=pl.when(pl.col("vm").is_not_null())
            .then(pl.lit("vcpu_wake"))
            .otherwise(pl.lit("task_wakeup")),
            vm=pl.col("vm"),
            vcpu=pl.col("vcpu"),
            pcpu=pl.col("target_cpu"),
            tid=pl.col("pid"),
            origin=origin,
        ),
        _other(wk.filter(~pl.col("counts")), pcpu=pl.col("cpu"), tid=pl.col("tid"), origin=origin),
    ]

    def on_thread(group: str, drop: tuple[str, ...] = ("vcpu",)) -> pl.DataFrame:
        df = parsed[group]
        return df.drop([c for c in drop if c in df.columns]).join(thread, on="tid", how="left")

    at = {
        "vm": pl.col("vm"),
        "vcpu": pl.col("vcpu"),
        "pcpu": pl.col("cpu"),
        "tid": pl.col("tid"),
        "origin": origin,
    }
    exits = on_thread("exit").join(_hypercall_after_exit(parsed), on="row", how="left")
    out.append(_emit(exits, kind="vm_exit", reason=pl.col("norm_reason"), value=pl.col("hypercall_nr"), **at))
    out.append(_emit(on_thread("entry"), kind="vm_entry", **at))

    # hypercalls: kick / yield targets are APIC ids, mapped to vCPU indexes of the caller's VM
    apic = vmap.select(
        "vm", pl.col("apic_id").alias("target_apic"), pl.col("vcpu").alias("target_vcpu")
    ).unique(subset=["vm", "target_apic"], keep="first")
    nr = pl.col("nr")
    hc = (
        on_thread("hypercall", ())
        .with_columns(
            pl.when(nr == KVM_HC_KICK_CPU)
            .then(pl.col("a1"))
            .when(nr == KVM_HC_SCHED_YIELD)
            .then(pl.col("a0"))
            .cast(pl.Int32)
            .alias("target_apic")
        )
        .join(apic, on=["vm", "target_apic"], how="left", nulls_equal=False)
    )
    hc_kind = (
        pl.when(nr == KVM_HC_KICK_CPU)
        .then(pl.lit("pv_kick"))
        .when(nr == KVM_HC_SCHED_YIELD)
        .then(pl.lit("yield_to"))
        .otherwise(pl.lit("other"))
    )
    out.append(
        _emit(
            hc,
            kind=hc_kind,
            target=pl.coalesce("target_vcpu", "target_apic"),
            value=nr,
            args=pl.when(hc_kind == "other").then(pl.col("payload")),
            **at,
        )
    )
    out.append(_other(on_thread("vcpu_wakeup", ()), reason=pl.col("how"), value=pl.col("time_ns"), **at))
    ple = parsed["ple"].rename({"vcpu": "kvm_vcpu"}).join(thread, on="tid", how="left")
    out.append(
        _emit(
            ple,
            kind="ple_window",
            value=pl.col("window"),
            **{**at, "vcpu": pl.coalesce("vcpu", "kvm_vcpu")},
        )
    )
    out.append(_other(on_thread("tsc"), value=pl.col("offset"), **at))
    out.append(_lost(host, origin, pcpu=pl.col("cpu")))
    handled = [e for g in _HOST_GROUPS for e in _GROUPS[g]] + list(_LOST)
    rest = host.filter(~pl.col("event").is_in(handled)).join(thread, on="tid", how="left")
    out.append(_other(rest, **at))
    return out


# --------------------------------------------------------------------------- guest

_NAME_SUFFIXES = (".gz", ".xz", ".zst", ".bz2", ".dat", ".txt", ".trace", ".log")


def _base(source: str) -> str:
    """A source label without directories and trace/compression suffixes."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1]
    while name.endswith(_NAME_SUFFIXES):
        name = name[: name.rindex(".")]
    return name


def _common_prefix(words: list[str]) -> str:
    first, last = min(words), max(words)
    n = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last))
    )
    return first[:n]


def guest_vm_names(
    sources: list[str], vm_name: str | None, host_sources: Sequence[str] = (), others: Sequence[str] = ()
) -> dict[str, str]:
    """VM name per guest source.

    The vm_name option when there is one guest input; else the part after the
    host input's name (`trace.dat` + `trace-<vm>.dat`, trace-cmd -A; `h.txt` +
    `h-<vm>.txt`, pvtrace's own renders); else, for several guest inputs, what
    follows their common `<prefix>-` (`run-vm0.txt`, `run-vm1.txt`); else after
    `trace-`; else the name itself when there are several inputs; else vm_name
    or "guest". others: the labels of inputs that gave no records (they still
    show the naming pattern).
    """
    if vm_name is not None and len(sources) == 1:
        return {sources[0]: vm_name}
    hosts = sorted((_base(h) for h in host_sources if h), key=len, reverse=True)
    bases = {src: _base(src) for src in sources}
    peers = [*bases.values(), *(_base(o) for o in others if o)]
    common = _common_prefix(peers) if len(peers) > 1 else ""
    common = common[: common.rfind("-") + 1]
    names: dict[str, str] = {}
    for src, base in bases.items():
        stem = next((h for h in hosts if base.startswith(h + "-") and len(base) > len(h) + 1), None)
        if stem is not None:
            names[src] = base[len(stem) + 1 :]
        elif common and len(base) > len(common):
            names[src] = base[len(common) :]
        elif base.startswith("trace-") and len(base) > len("trace-"):
            names[src] = base.removeprefix("trace-")
        elif src and (len(sources) > 1 or hosts):
            names[src] = base
        else:
            names[src] = vm_name or DEFAULT_GUEST_VM
    return names


def _guest_events(
    guest: pl.DataFrame, parsed: dict[str, pl.DataFrame], with_wakeup: list[str], with_contention: list[str]
) -> list[pl.DataFrame]:
    """Canonical events of guest rows (guest carries a `vm` column per source)."""
    origin = "guest"
    at = {"vm": pl.col("vm"), "vcpu": pl.col("cpu"), "tid": pl.col("tid"), "origin": origin}
    out: list[pl.DataFrame] = []

    switch = parsed["switch"]
    ok = pl.col("prev_pid").is_not_null() & pl.col("next_pid").is_not_null()
    out.append(
        _emit(
            switch.filter(ok),
            kind="task_switch",
            reason=pl.col("prev_state"),
            value=pl.col("next_pid"),
            **{**at, "tid": pl.col("prev_pid")},
        )
    )
    out.append(_other(switch.filter(~ok), **at))
    wake = parsed["wake"]
    wk = wake.with_columns(_counted_wakes(with_wakeup).alias("counts"))
    out.append(_emit(wk.filter(pl.col("counts")), kind="task_wakeup", **{**at, "tid": pl.col("pid")}))
    out.append(_other(wk.filter(~pl.col("counts")), **at))

    cont = parsed["contention"]
    begin = pl.col("event") == "contention_begin"
    out.append(
        _emit(
            cont.filter(pl.col("lock").is_not_null()),
            kind=pl.when(begin).then(pl.lit("lock_contend")).otherwise(pl.lit("lock_acquire")),
            lock=pl.col("lock"),
            reason=pl.when(begin).then(pl.col("flags")),
            value=pl.when(~begin).then(pl.col("ret")),
            **at,
        )
    )
    out.append(_other(cont.filter(pl.col("lock").is_null()), **at))

    # lockdep, for inputs without lock:contention_* events
    attempt = (pl.col("event") == "lock_acquire") & (
        pl.col("event").shift(-1).over("src", "tid", "lock") == "lock_contended"
    )
    ld = (
        parsed["lockdep"]
        .sort("row")
        .with_columns(
            (
                ~pl.col("src").is_in(with_contention)
                & ~attempt.fill_null(False)
                & pl.col("name").is_not_null()
            ).alias("use")
        )
    )
    kinds = {name: ALIASES[name].kind for name in _GROUPS["lockdep"]}
    out.append(
        _emit(
            ld.filter(pl.col("use")),
            kind=pl.col("event").cast(pl.String).replace_strict(kinds, return_dtype=pl.String),
            lock=pl.col("lock"),
            reason=pl.col("name"),
            value=pl.col("bits"),
            **at,
        )
    )
    out.append(_other(ld.filter(~pl.col("use")), **at))
    out.append(_lost(guest, origin, vm=pl.col("vm"), vcpu=pl.col("cpu")))
    handled = [e for g in _GUEST_GROUPS for e in _GROUPS[g]] + list(_LOST)
    out.append(_other(guest.filter(~pl.col("event").is_in(handled)), **at))
    return out


# ---------------------------------------------------------------------------- main


def _user_map(vcpu_map: pl.DataFrame | None) -> pl.DataFrame | None:
    if vcpu_map is None:
        return None
    cols = [
        pl.col(c) if c in vcpu_map.columns else pl.lit(None, dtype=t).alias(c)
        for c, t in VCPU_MAP_SCHEMA.items()
    ]
    return (
        vcpu_map.select(cols)
        .cast(dict(VCPU_MAP_SCHEMA))
        .with_columns(pl.coalesce("apic_id", "vcpu").alias("apic_id"), pl.col("how").fill_null("map file"))
    )


def _carried_map(user_map: pl.DataFrame | None, carry: dict[str, Any]) -> pl.DataFrame | None:
    """The user's map plus the rows an earlier chunk found (user rows win)."""
    rows = carry.get("vcpu_map") or []
    if not rows:
        return user_map
    earlier = pl.DataFrame(rows, schema=VCPU_MAP_SCHEMA)
    if user_map is None:
        return earlier
    return pl.concat([user_map, earlier.filter(~pl.col("tid").is_in(user_map["tid"].implode()))])


def normalize(
    raw: pl.DataFrame,
    *,
    side: str | dict[str, str] = "auto",
    vm_name: str | None = None,
    vcpu_map: pl.DataFrame | None = None,
    guest_offset_ns: int | dict[str, int] | None = None,
    carry: dict[str, Any] | None = None,
    inputs: Sequence[str] = (),
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Canonical events (EVENT_SCHEMA, sorted by (ts, seq)) and an info dict.

    side: "host", "guest", "auto" (per input source: host when it has kvm_*
    events or `CPU n/KVM` threads), or {source: side} (source "" = no prefix).
    vm_name: the guest VM's name. vcpu_map: a user map (tid, pid, vm, vcpu
    [, apic_id]; see vcpu_map.read_vcpu_map). guest_offset_ns: host_ts =
    guest_ts + offset for guest events (one number for every guest VM, or
    {vm: offset}).
    carry: info["carry"] of the previous chunk when a big input is normalized
    chunk by chunk (sides, vCPU map, guest names, clock offset, which inputs
    recorded sched_wakeup / contention events), so chunks agree. inputs: the
    source labels of every input file, also those that gave no records (their
    names help name the guests of the others).
    info: side ("host", "guest" or "mixed"), sides (per source), origin, view,
    guest_vm_names, vcpu_map (rows with how each was found), vms, clock,
    events_by_tracepoint, events_by_kind, unknown_events, unparsed_payloads,
    notes, carry.
    """
    if isinstance(side, str) and side not in SIDES:
        raise UsageError(f"side must be one of {', '.join(SIDES)}, not {side!r}")
    if isinstance(side, dict) and not set(side.values()) <= {"host", "guest"}:
        raise UsageError(f"sides must be host or guest, not {sorted(set(side.values()))}")
    carry = carry or {}
    user_map = _user_map(vcpu_map)
    frame, n_untimed = _prepare(raw)
    sides = _detect_sides(frame, side, _carried_map(user_map, carry), carry.get("sides", {}))
    guest_srcs = sorted(sides.filter(pl.col("side") == "guest")["src"].to_list())
    host_srcs = sorted(sides.filter(pl.col("side") == "host")["src"].to_list())
    known_names = carry.get("guest_vm_names", {})
    others = [i for i in inputs if i not in host_srcs and i not in guest_srcs]
    new_names = guest_vm_names([s for s in guest_srcs if s not in known_names], vm_name, host_srcs, others)
    names = {**new_names, **known_names}
    names = {s: names[s] for s in guest_srcs}
    # whole-frame copies are what costs memory on big inputs: split only when both sides are present
    host = frame if not guest_srcs else frame.filter(pl.col("src").is_in(host_srcs))
    guest = frame if not host_srcs else frame.filter(pl.col("src").is_in(guest_srcs))
    if not guest_srcs:
        guest = guest.clear()
    guest = guest.with_columns(
        pl.col("src").replace_strict(names, default=None, return_dtype=pl.String).alias("vm")
    )
    notes: list[str] = []

    h_parsed = _parse_groups(host, _HOST_GROUPS)
    g_parsed = _parse_groups(guest, _GUEST_GROUPS)
    vmap, map_notes = _host_map(host, h_parsed, _carried_map(user_map, carry))
    notes += map_notes
    host_vms = sorted(set(vmap["vm"].to_list()))
    guest_vms = sorted(set(names.values()))
    one_each = len(host_vms) == 1 and len(guest_vms) == 1 and host_vms[0] != guest_vms[0]
    # names settled by the user or by an earlier chunk stay as they are
    settled = vmap["how"].str.contains("map file").any() or bool(carry.get("vcpu_map"))
    if one_each and vm_name is None and not settled:
        # one VM seen from each side is the same VM; the guest's name is the readable one
        notes.append(
            f"host VM {host_vms[0]} and guest VM {guest_vms[0]} taken as one VM named {guest_vms[0]}"
        )
        vmap = vmap.with_columns(pl.col("vm").replace(host_vms[0], guest_vms[0]))

    def sources_with(events: tuple[str, ...], key: str) -> list[str]:
        seen = frame.filter(pl.col("event").is_in(list(events)))["src"].unique().to_list()
        return sorted(set(seen) | set(carry.get(key, [])))

    with_wakeup = sources_with(_WAKEUPS, "wakeup_sources")
    with_contention = sources_with(_GROUPS["contention"], "contention_sources")
    empty = _emit(frame.clear())
    host_events = pl.concat(_host_events(host, h_parsed, vmap, with_wakeup)) if host.height else empty
    guest_events = (
        pl.concat(_guest_events(guest, g_parsed, with_wakeup, with_contention)) if guest.height else empty
    )
    earlier = carry.get("clock_guests", {})
    offsets, per_vm = clocks.guest_offsets(
        host_events["ts"],
        guest_events.select("vm", "vcpu", "ts"),
        given=guest_offset_ns,
        tsc_offsets=h_parsed["tsc"]["offset"],
        decided={vm: int(carry["guest_offsets"][vm]) for vm in carry.get("guest_offsets", {})},
        host_events=host_events.select("vm", "vcpu", "kind", "ts", "row", "sub"),
    )
    per_vm = {**earlier, **per_vm}
    has_host = host.height > 0 or "host" in carry.get("sides", {}).values()
    clock = clocks.clock_report({**carry.get("guest_offsets", {}), **offsets}, per_vm, has_host)
    if any(offsets.values()):
        shift = pl.col("vm").cast(pl.String).replace_strict(offsets, default=0, return_dtype=pl.Int64)
        guest_events = guest_events.with_columns(pl.col("ts") + shift)
    if clock.get("synchronized"):
        guest_events, n_snapped = clocks.snap_guest_events(host_events, guest_events, per_vm)
        if n_snapped:
            clock["guest_events_moved_into_runs"] = n_snapped
    if n_untimed:
        clock["untimed_records"] = n_untimed
        notes.append(
            f"{n_untimed} record(s) had no timestamp; they keep their file order at the previous record's time"
        )
    if "warning" in clock:
        notes.append(clock["warning"])

    # seq = emission order (row, then out before in; ties keep their order of emission); then a
    # stable sort by ts, which is by (ts, seq), skipped when the file order is already time order
    events = (
        pl.concat([host_events, guest_events])
        .sort(pl.col("row") * 2 + pl.col("sub"), maintain_order=True)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))
    )
    if not events["ts"].is_sorted():
        events = events.sort("ts", maintain_order=True)
    events = conform_events(events.drop("row", "sub"))
    unparsed = pl.concat([_unparsed(h_parsed), _unparsed(g_parsed)])
    info = _info(frame, sides, vmap, names, events, clock, notes)
    info["unparsed_payloads"] = _counts(unparsed, "event")
    info["carry"] = {
        "sides": {**carry.get("sides", {}), **{k: v["side"] for k, v in info["sides"].items()}},
        "vcpu_map": info["vcpu_map"],
        "guest_vm_names": {**known_names, **names},
        "wakeup_sources": with_wakeup,
        "contention_sources": with_contention,
        "guest_offsets": {
            **carry.get("guest_offsets", {}),
            **{vm: off for vm, off in offsets.items() if clocks.is_decided(per_vm.get(vm, {}))},
        },
        "clock_guests": per_vm,
    }
    return events, info


def _counts(df: pl.DataFrame, col: str) -> dict[str, int]:
    if df.height == 0:
        return {}
    c = df.group_by(col).len().sort(["len", col], descending=[True, False])
    return {str(k): int(v) for k, v in zip(c[col], c["len"], strict=True)}


def _info(
    frame: pl.DataFrame,
    sides: pl.DataFrame,
    vmap: pl.DataFrame,
    guest_names: dict[str, str],
    events: pl.DataFrame,
    clock: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    present = set(sides["side"].to_list())
    origin = "+".join(s for s in ("host", "guest") if s in present) or "none"
    vms: dict[str, dict[str, Any]] = {}
    # n_vcpus: highest vCPU index seen + 1 (a lower bound when some vCPUs stayed silent)
    for row in (
        vmap.group_by("vm").agg((pl.col("vcpu").max() + 1).alias("n")).sort("vm").iter_rows(named=True)
    ):
        vms[row["vm"]] = {"n_vcpus": int(row["n"]), "side": "host"}
    guest_cpus = (
        events.filter(pl.col("origin") == "guest")
        .group_by(pl.col("vm").cast(pl.String))
        .agg((pl.col("vcpu").max() + 1).fill_null(0).alias("n"))
        .sort("vm")
    )
    for row in guest_cpus.iter_rows(named=True):
        seen = vms.get(row["vm"])
        if seen is None:
            vms[row["vm"]] = {"n_vcpus": int(row["n"]), "side": "guest"}
        else:
            seen["n_vcpus"] = max(seen["n_vcpus"], int(row["n"]))
            seen["side"] = "both"
    other = events.filter(pl.col("kind") == "other").select(pl.col("event").cast(pl.String))
    return {
        "side": next(iter(present)) if len(present) == 1 else ("mixed" if present else "none"),
        "sides": {
            r["src"]: {"side": r["side"], "how": r["side_how"]}
            for r in sides.sort("src").iter_rows(named=True)
        },
        "origin": origin,
        "view": {"host": "host", "guest": "guest", "host+guest": "merged"}.get(origin, "full"),
        "guest_vm_names": guest_names,
        "vcpu_map": vmap.to_dicts(),
        "vms": vms,
        "clock": clock,
        "events_by_tracepoint": _counts(frame.select("event"), "event"),
        "events_by_kind": _counts(events.select(pl.col("kind").cast(pl.String)), "kind"),
        "unknown_events": _counts(other.filter(~pl.col("event").is_in(list(ALIASES))), "event"),
        "notes": notes,
    }
