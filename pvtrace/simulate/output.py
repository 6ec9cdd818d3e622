"""Columnar event output: three int64 arrays per batch, decoded into canonical events.

The engine appends (ts, key, x) per event: key packs kind, reason, vm and vcpu;
x is the one number the kind needs (pcpu, lock index, target vCPU or PLE
window; -1 for none). A batch is decoded with vectorized polars/numpy into
EVENT_SCHEMA and handed to a sink, so memory stays bounded by the batch size.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import polars as pl

from pvtrace.schema import EVENT_SCHEMA, KIND, KINDS, ORIGIN

K = {name: i for i, name in enumerate(KINDS)}
RUN, PREEMPT, HALT, WAKE = K["vcpu_run"], K["vcpu_preempt"], K["vcpu_halt"], K["vcpu_wake"]
EXIT, ENTRY, CONTEND, ACQUIRE, RELEASE = (
    K["vm_exit"],
    K["vm_entry"],
    K["lock_contend"],
    K["lock_acquire"],
    K["lock_release"],
)
PV_HALT, PV_KICK, YIELD_TO, PLE_WINDOW = K["pv_halt"], K["pv_kick"], K["yield_to"], K["ple_window"]

# Guest tracepoints the model emits as `other` events (kind codes past KINDS), with their payloads
# (include/trace/events/ipi.h and csd.h): x is the target CPU (csd_queue_cpu), the CPU mask
# (ipi_send_cpumask) or the sending CPU (csd_function_entry/exit, whose row is the target).
OTHER_EVENTS: tuple[str, ...] = (
    "csd_queue_cpu",
    "ipi_send_cpumask",
    "csd_function_entry",
    "csd_function_exit",
)
CSD_QUEUE, IPI_SEND, CSD_ENTRY, CSD_EXIT = range(len(KINDS), len(KINDS) + len(OTHER_EVENTS))
FLUSH_FUNC = "flush_tlb_func"
QUEUE_CALLSITE = "smp_call_function_many_cond+0x1a5/0x4c0"
SEND_CALLSITE = "smp_call_function_many_cond+0x2b4/0x4c0"
# a csd lives in the target CPU's per-cpu area, at the sender's slot of the call-function data
PERCPU_BASE = 0xFFFF_888F_7FA0_0000
PERCPU_STRIDE = 0x4_0000
CSD_SIZE = 0x20

# Reason codes: (reason text, value implied by the reason).
REASONS: tuple[tuple[str | None, int | None], ...] = (
    (None, None),
    ("R+", None),
    ("R", None),
    ("HLT", None),
    ("SPIN", None),
    ("PAUSE", None),
    ("HYPERCALL", 5),  # KVM_HC_KICK_CPU
    ("HYPERCALL", 11),  # KVM_HC_SCHED_YIELD
    ("EXTERNAL_INTERRUPT", None),
    ("EXTERNAL_INTERRUPT", 1),  # the interrupt found the guest in user mode (vm_exit value 1)
)
R_NONE, R_RUNNABLE_PLUS, R_RUNNABLE, R_HLT, R_SPIN, R_PAUSE, R_KICK, R_YIELD, R_EXTINT, R_EXTINT_USER = range(
    len(REASONS)
)

KIND_BITS, REASON_BITS, VM_BITS = 5, 4, 16
REASON_SHIFT = KIND_BITS
VM_SHIFT = KIND_BITS + REASON_BITS
VCPU_SHIFT = VM_SHIFT + VM_BITS

KICK_HYPERCALL = 5

# Lock addresses look like kernel direct-map pointers; unique within a VM.
LOCK_BASE = 0xFFFF_8881_0A40_0000
LOCK_STRIDE = 0x140

_PCPU_KINDS = [RUN, PREEMPT, HALT, WAKE, EXIT, ENTRY]
_LOCK_KINDS = [CONTEND, ACQUIRE, RELEASE, PV_HALT]
_TARGET_KINDS = [PV_KICK, YIELD_TO]


def vcpu_key(vm_index: int, vcpu: int) -> int:
    """The vm/vcpu part of an event key."""
    return (vm_index << VM_SHIFT) | (vcpu << VCPU_SHIFT)


def lock_address(lock_index: int) -> int:
    """The address a VM's lock number k is reported under."""
    return LOCK_BASE + LOCK_STRIDE * lock_index


class EventBuffer:
    """Append-only columns of one batch; `flush` decodes them and hands a frame to the sink.

    The sink (Parquet encoding and compression, which run without the GIL) works
    on one background thread, in order, while the engine fills the next batch;
    at most two batches are alive.
    """

    def __init__(
        self,
        vm_names: list[str],
        sink: Callable[[pl.DataFrame], None],
        batch_size: int = 1 << 20,
        n_vcpus: int = 1,
    ):
        self.ts = array("q")
        self.key = array("q")
        self.x = array("q")
        self.sink = sink
        self.batch_size = batch_size
        self.n_flushed = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pvtrace-events")
        self._pending: Future | None = None
        self._vm_names = pl.Series("vm", vm_names, dtype=pl.Categorical())
        self._mask_digits = (n_vcpus + 3) // 4  # the cpumask's hex width (bitmap_string)
        self._kinds = pl.Series("kind", [*KINDS, *(["other"] * len(OTHER_EVENTS))], dtype=KIND)
        self._events = pl.Series("event", [*KINDS, *OTHER_EVENTS], dtype=pl.Categorical())
        self._reasons = pl.Series("reason", [r for r, _ in REASONS], dtype=pl.Categorical())
        self._reason_values = pl.Series("value", [v for _, v in REASONS], dtype=pl.Int64())

    @property
    def n_events(self) -> int:
        return self.n_flushed + len(self.ts)

    def flush(self) -> None:
        """Hand the batch so far to the background thread (after the previous one is done)."""
        n = len(self.ts)
        if n == 0:
            return
        cols = [np.frombuffer(a, dtype=np.int64).copy() for a in (self.ts, self.key, self.x)]
        del self.ts[:], self.key[:], self.x[:]  # (the copies keep no view of the arrays)
        frame = self.decode(*cols, self.n_flushed)
        self.n_flushed += n
        self._wait()
        self._pending = self._pool.submit(self.sink, frame)

    def close(self) -> None:
        """Flush the rest and wait until the sink has everything."""
        try:
            self.flush()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without handing anything more to the sink (the run failed)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def decode(self, ts: np.ndarray, key: np.ndarray, x: np.ndarray, first_seq: int) -> pl.DataFrame:
        """Packed columns -> canonical events."""
        kind = (key & ((1 << KIND_BITS) - 1)).astype(np.uint32)
        reason = ((key >> REASON_SHIFT) & ((1 << REASON_BITS) - 1)).astype(np.uint32)
        vm = ((key >> VM_SHIFT) & ((1 << VM_BITS) - 1)).astype(np.uint32)
        vcpu = (key >> VCPU_SHIFT).astype(np.int32)
        n = len(ts)
        df = pl.DataFrame(
            {
                "ts": ts,
                "seq": np.arange(first_seq, first_seq + n, dtype=np.int64),
                "vm": self._vm_names.gather(vm),
                "vcpu": vcpu,
                "_kind": kind,
                "_x": x,
                "kind": self._kinds.gather(kind),
                "reason": self._reasons.gather(reason),
                "_rvalue": self._reason_values.gather(reason),
                "event": self._events.gather(kind),
            }
        )
        k, xv = pl.col("_kind"), pl.col("_x")
        return df.select(
            "ts",
            "seq",
            "vm",
            "vcpu",
            pl.when(k.is_in(_PCPU_KINDS) & (xv >= 0)).then(xv).cast(pl.Int32).alias("pcpu"),
            "kind",
            pl.when(k.is_in(_LOCK_KINDS))
            .then(pl.lit(LOCK_BASE, pl.UInt64) + xv.cast(pl.UInt64) * LOCK_STRIDE)
            .alias("lock"),
            "reason",
            pl.when(k.is_in(_TARGET_KINDS)).then(xv).cast(pl.Int32).alias("target"),
            pl.when(k == PLE_WINDOW)
            .then(xv)
            .when(k == PV_KICK)
            .then(pl.lit(KICK_HYPERCALL, pl.Int64))
            .otherwise(pl.col("_rvalue"))
            .alias("value"),
            pl.lit("sim", ORIGIN).alias("origin"),
            pl.lit(None, pl.Int32).alias("tid"),
            "event",
            self.other_args(kind, vcpu, x)
            if kind.max() >= CSD_QUEUE
            else pl.lit(None, pl.String).alias("args"),
        ).cast(dict(EVENT_SCHEMA))

    def other_args(self, kind: np.ndarray, vcpu: np.ndarray, x: np.ndarray) -> pl.Series:
        """The payloads of the IPI tracepoints (null on every other row); these rows are few."""
        args = pl.repeat(None, len(kind), dtype=pl.String, eager=True).alias("args")
        idx = np.nonzero(kind >= CSD_QUEUE)[0]
        if not len(idx):
            return args
        texts = []
        for k, me, other in zip(kind[idx].tolist(), vcpu[idx].tolist(), x[idx].tolist(), strict=True):
            if k == IPI_SEND:
                texts.append(
                    f"cpumask={other:0{self._mask_digits}x} callsite={SEND_CALLSITE} callback={FLUSH_FUNC}+0x0/0x250"
                )
                continue
            sender, target = (me, other) if k == CSD_QUEUE else (other, me)
            csd = f"0x{PERCPU_BASE + PERCPU_STRIDE * target + CSD_SIZE * sender:x}"
            if k == CSD_QUEUE:
                texts.append(f"cpu={target} callsite={QUEUE_CALLSITE} func={FLUSH_FUNC} csd={csd}")
            else:
                texts.append(f"func={FLUSH_FUNC}, csd={csd}")
        return args.scatter(idx, texts)
