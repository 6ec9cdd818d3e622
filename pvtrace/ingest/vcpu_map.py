"""Host thread -> (vm, vcpu): which QEMU thread runs which virtual CPU.

Evidence, strongest first (formats.md section 6):
1. a map file from the user (`tid,pid,vm,vcpu[,apic_id]`, e.g. the simulator's
   `<trace>.vcpus.csv` side file);
2. the vCPU index in the thread name (`CPU n/KVM` from QEMU with
   debug-threads=on, `fc_vcpu n` from Firecracker);
3. the `vcpu N` that kvm_entry / kvm_exit / kvm_ple_window report on the thread
   (the KVM vcpu id, which is the APIC id on x86: it equals the index for simple
   topologies, which is then assumed);
and for the VM: the map file, the thread's tgid (the QEMU process), a
`vhost-<pid>` / `kvm-pit/<pid>` kernel thread naming the QEMU pid, the known
QEMU process just below the thread's id (guessed), or, lacking all of these, a
VM `guess-<first tid>` grouping threads by id order (guessed). Every map row
says how it was found.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pvtrace.errors import FormatError
from pvtrace.outputs import unreadable_why

VCPU_MAP_SCHEMA = pl.Schema(
    {
        "tid": pl.Int32(),  # host thread id of the vCPU thread
        "pid": pl.Int32(),  # QEMU process id (null when unknown)
        "vm": pl.String(),  # VM id: map-file name, or the QEMU pid as text, or a guess
        "vcpu": pl.Int32(),  # vCPU index (= guest CPU number)
        "apic_id": pl.Int32(),  # KVM vcpu id / APIC id (hypercall targets use it)
        "how": pl.String(),  # how the row was found
    }
)
USER_MAP_COLUMNS = ("tid", "pid", "vm", "vcpu", "apic_id")
MAP_SUFFIX = ".vcpus.csv"
_COMPRESSED = (".gz", ".xz", ".zst")

# Thread names that carry the vCPU index.
_VCPU_NAME = r"^(?:CPU (\d+)/KVM|fc_vcpu (\d+))$"
# Kernel threads named after the QEMU pid.
_VM_PID_NAME = r"^(?:vhost-(\d+)|kvm-pit/(\d+))$"


def empty_map() -> pl.DataFrame:
    return pl.DataFrame(schema=VCPU_MAP_SCHEMA)


def find_vcpu_map(inputs: list[Path]) -> Path | None:
    """The `<input>.vcpus.csv` side file next to the first input that has one.

    For a compressed input `t.txt.xz` both `t.txt.xz.vcpus.csv` and
    `t.txt.vcpus.csv` are looked for.
    """
    for path in inputs:
        path = Path(path)
        candidates = [path.with_name(path.name + MAP_SUFFIX)]
        if path.suffix in _COMPRESSED:
            candidates.append(path.with_name(path.stem + MAP_SUFFIX))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def read_vcpu_map(path: Path | str) -> pl.DataFrame:
    """Read a user map CSV `tid,pid,vm,vcpu` (pid and apic_id optional) into VCPU_MAP_SCHEMA."""
    path = Path(path)
    try:
        text = pl.read_csv(path, infer_schema=False, comment_prefix="#", glob=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        why = unreadable_why(exc, path)
        raise FormatError(f"not a readable vCPU map CSV ({why})", str(path)) from None
    text = text.rename({c: c.strip().lower() for c in text.columns})
    missing = [c for c in ("tid", "vm", "vcpu") if c not in text.columns]
    if missing:
        raise FormatError(
            f"vCPU map lacks column(s) {', '.join(missing)}; expected header tid,pid,vm,vcpu", str(path), 1
        )
    for c in USER_MAP_COLUMNS:
        if c not in text.columns:
            text = text.with_columns(pl.lit(None, dtype=pl.String).alias(c))
    text = text.select(pl.col(c).str.strip_chars() for c in USER_MAP_COLUMNS)
    ints = ("tid", "pid", "vcpu", "apic_id")
    typed = text.with_columns(pl.col(c).cast(pl.Int32, strict=False) for c in ints)
    bad = (
        pl.any_horizontal(
            [(pl.col(c).is_not_null() & typed[c].is_null()) for c in ints]
            + [pl.col(c).is_null() for c in ("tid", "vcpu")]
        )
        | pl.col("vm").is_null()
        | (pl.col("vm") == "")
    )
    bad_rows = text.with_row_index("i").filter(bad)
    if bad_rows.height:
        row = bad_rows.row(0, named=True)
        raise FormatError(
            f"bad vCPU map row (tid, vm and vcpu are required, ids are integers): {row['tid']},"
            f"{row['pid']},{row['vm']},{row['vcpu']}",
            str(path),
            int(row["i"]) + 2,
        )
    dup = typed.filter(pl.col("tid").is_duplicated())
    if dup.height:
        raise FormatError(f"vCPU map lists thread {dup['tid'][0]} twice", str(path))
    return (
        typed.with_columns(pl.coalesce("apic_id", "vcpu").alias("apic_id"), pl.lit("map file").alias("how"))
        .select(VCPU_MAP_SCHEMA.names())
        .cast(dict(VCPU_MAP_SCHEMA))
    )


def _mode_per_tid(df: pl.DataFrame, col: str) -> pl.DataFrame:
    """Per tid: the most frequent value of col (smallest on ties), and how many distinct values it had."""
    counts = df.group_by("tid", col).len()
    return (
        counts.sort(["tid", "len", col], descending=[False, True, False])
        .group_by("tid", maintain_order=True)
        .agg(pl.col(col).first(), pl.len().alias(f"n_{col}"))
    )


def build_vcpu_map(
    names: pl.DataFrame,
    kvm_ids: pl.DataFrame,
    tgids: pl.DataFrame,
    user_map: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """Find the vCPU threads of a host trace and tie each to (vm, vcpu).

    names: (tid, comm) pairs seen anywhere (line comms, sched_switch and wakeup
    fields); kvm_ids: (tid, kvm_vcpu) from KVM events the thread emitted;
    tgids: (tid, tgid) where a TGID column or perf pid gave it; user_map: rows
    in VCPU_MAP_SCHEMA that override what the trace says. Returns the map (one
    row per vCPU thread) and notes for the ingest summary.
    """
    notes: list[str] = []
    # one row per distinct (tid, comm), in order of last appearance
    names = (
        names.select(pl.col("tid").cast(pl.Int32), pl.col("comm").cast(pl.String))
        .drop_nulls()
        .unique(keep="last", maintain_order=True)
        .filter(~pl.col("comm").str.contains(r"^<.*>$"))
    )
    idx = names.with_columns(
        pl.coalesce(pl.col("comm").str.extract(_VCPU_NAME, 1), pl.col("comm").str.extract(_VCPU_NAME, 2))
        .cast(pl.Int32)
        .alias("name_vcpu")
    ).filter(pl.col("name_vcpu").is_not_null())
    by_name = _mode_per_tid(idx, "name_vcpu")
    by_kvm = _mode_per_tid(
        kvm_ids.select(pl.col("tid").cast(pl.Int32), pl.col("kvm_vcpu").cast(pl.Int32)).drop_nulls(),
        "kvm_vcpu",
    )
    for frame, col, what in ((by_name, "name_vcpu", "names"), (by_kvm, "kvm_vcpu", "KVM vcpu ids")):
        clash = frame.filter(pl.col(f"n_{col}") > 1)
        if clash.height:
            notes.append(
                f"{clash.height} thread(s) carry several vCPU {what} (thread id reuse?); "
                f"the most frequent was used, e.g. thread {clash['tid'][0]}"
            )
    # last real name per thread, to tell processes apart when guessing
    last_comm = names.group_by("tid", maintain_order=True).agg(pl.col("comm").last())
    tgid = (
        tgids.select(pl.col("tid").cast(pl.Int32), pl.col("tgid").cast(pl.Int32))
        .drop_nulls()
        .filter(pl.col("tgid") > 0)
        .group_by("tid")
        .agg(pl.col("tgid").mode().sort().first())
    )
    threads = (
        by_name.join(by_kvm, on="tid", how="full", coalesce=True)
        .join(tgid, on="tid", how="left")
        .join(last_comm, on="tid", how="left")
        .with_columns(
            pl.coalesce("name_vcpu", "kvm_vcpu").alias("vcpu"),
            pl.coalesce("kvm_vcpu", "name_vcpu").alias("apic_id"),
            pl.when(pl.col("name_vcpu").is_not_null() & pl.col("kvm_vcpu").is_not_null())
            .then(pl.lit("vcpu from thread name and KVM vcpu id"))
            .when(pl.col("name_vcpu").is_not_null())
            .then(pl.lit("vcpu from thread name"))
            .otherwise(pl.lit("vcpu from KVM vcpu id (APIC id assumed = index)"))
            .alias("how_vcpu"),
        )
    )
    differ = threads.filter(
        pl.col("name_vcpu").is_not_null()
        & pl.col("kvm_vcpu").is_not_null()
        & (pl.col("name_vcpu") != pl.col("kvm_vcpu"))
    )
    if differ.height:
        notes.append(
            f"{differ.height} vCPU thread(s) have a KVM vcpu id (APIC id) different from their index; "
            "hypercall targets are mapped through the APIC ids"
        )

    user = user_map if user_map is not None else empty_map()
    user = user.cast(dict(VCPU_MAP_SCHEMA))
    threads = threads.filter(~pl.col("tid").is_in(user["tid"].implode()))
    pid_vm = user.filter(pl.col("pid").is_not_null()).group_by("pid").agg(pl.col("vm").first())
    threads = threads.join(pid_vm, left_on="tgid", right_on="pid", how="left").with_columns(
        pl.when(pl.col("vm").is_not_null())
        .then(pl.col("how_vcpu") + "; vm from tgid and map file")
        .when(pl.col("tgid").is_not_null())
        .then(pl.col("how_vcpu") + "; vm = tgid (QEMU process)")
        .alias("how"),
        pl.coalesce(pl.col("vm"), pl.col("tgid").cast(pl.String)).alias("vm"),
        pl.col("tgid").alias("pid"),
    )
    known = threads.filter(pl.col("vm").is_not_null())
    known_vms = pl.concat([user.select("pid", "vm"), known.select("pid", "vm")]).unique()
    guessed = _guess_vms(threads.filter(pl.col("vm").is_null()), names, known_vms, pid_vm)
    if guessed.height:
        from_pid_names = guessed["how"].str.contains("vhost-/kvm-pit").all()
        notes.append(
            f"{guessed.height} vCPU thread(s) have no process id in the trace; their VM was "
            + ("taken from vhost-/kvm-pit thread names" if from_pid_names else "guessed")
            + " (pass a map file tid,pid,vm,vcpu to be sure)"
        )
    cols = VCPU_MAP_SCHEMA.names()
    found = pl.concat([known.select(cols), guessed.select(cols)]).cast(dict(VCPU_MAP_SCHEMA))
    result = pl.concat([user.select(cols), found]).sort("vm", "vcpu", "tid")
    return result, notes


def _guess_vms(
    threads: pl.DataFrame, names: pl.DataFrame, known: pl.DataFrame, pid_vm: pl.DataFrame
) -> pl.DataFrame:
    """Group vCPU threads without a process id into VMs by thread-id order.

    A VM's vCPU threads are created in index order, so in tid order a new VM
    starts where the index does not grow or the process name changes. A group
    then belongs to the QEMU process whose pid lies just below its first
    thread: one named by a `vhost-<pid>`/`kvm-pit/<pid>` kernel thread, or the
    process of vCPU threads whose tgid is known (known: rows with pid and vm;
    pid_vm: the user map's pid -> vm names).
    """
    if threads.height == 0:
        return threads
    threads = threads.drop("pid", "vm", "how")
    family = (
        pl.when(pl.col("name_vcpu").is_not_null()).then(pl.lit("\x00vcpu-name")).otherwise(pl.col("comm"))
    )
    grouped = (
        threads.sort("tid")
        .with_columns(family.fill_null("").alias("family"))
        .with_columns(
            ((pl.col("vcpu") <= pl.col("vcpu").shift(1)) | (pl.col("family") != pl.col("family").shift(1)))
            .fill_null(True)
            .cum_sum()
            .alias("group")
        )
    )
    groups = (
        grouped.group_by("group")
        .agg(pl.col("tid").min().alias("first_tid"), pl.col("tid").max().alias("last_tid"))
        .sort("first_tid")
        .with_columns(pl.col("last_tid").shift(1).fill_null(-1).alias("prev_last"))
    )
    named = (
        names.select(
            pl.coalesce(
                pl.col("comm").str.extract(_VM_PID_NAME, 1), pl.col("comm").str.extract(_VM_PID_NAME, 2)
            )
            .cast(pl.Int32)
            .alias("vm_pid")
        )
        .drop_nulls()
        .join(pid_vm.rename({"pid": "vm_pid", "vm": "vm_name"}), on="vm_pid", how="left")
        .select(
            "vm_pid",
            pl.coalesce("vm_name", pl.col("vm_pid").cast(pl.String)).alias("vm_name"),
            pl.lit("vm from a vhost-/kvm-pit thread name").alias("vm_how"),
        )
    )
    processes = known.filter(pl.col("pid").is_not_null()).select(
        pl.col("pid").cast(pl.Int32).alias("vm_pid"),
        pl.col("vm").alias("vm_name"),
        pl.lit("vm guessed: the known QEMU process just below its thread id").alias("vm_how"),
    )
    candidates = pl.concat([processes, named]).unique(subset="vm_pid", keep="first").sort("vm_pid")
    groups = groups.join_asof(candidates, left_on="first_tid", right_on="vm_pid", strategy="backward")
    fits = pl.col("vm_pid") > pl.col("prev_last")
    groups = groups.with_columns(
        pl.when(fits).then(pl.col("vm_pid")).alias("pid"),
        pl.when(fits)
        .then(pl.col("vm_name"))
        .otherwise(pl.lit("guess-") + pl.col("first_tid").cast(pl.String))
        .alias("vm"),
        pl.when(fits)
        .then(pl.col("vm_how"))
        .otherwise(pl.lit("vm guessed (threads grouped by id order)"))
        .alias("vm_how"),
    )
    return grouped.join(groups.select("group", "pid", "vm", "vm_how"), on="group").with_columns(
        (pl.col("how_vcpu") + "; " + pl.col("vm_how")).alias("how")
    )
