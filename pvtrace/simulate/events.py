"""Heap event types of the engine and the packed keys of the events it emits."""

from __future__ import annotations

from pvtrace.simulate import output as o

# Heap event types.
(
    EV_STOP,
    EV_ATTEMPT,
    EV_RELEASE,
    EV_ENTRY,
    EV_SPIN,
    EV_WAKE,
    EV_SLICE,
    EV_NOISE_WAKE,
    EV_NOISE_DONE,
    EV_GANG,
    EV_SCAN,
    EV_POLL_END,
    EV_BALANCE,
    EV_IPI,
    EV_GUEST,
) = range(15)

NEVER = 1 << 62  # a time no run reaches


class K:
    """Event key parts: kind | reason << REASON_SHIFT (the vm/vcpu part is VCpu.key)."""

    RS = o.REASON_SHIFT
    RUN = o.RUN
    ENTRY = o.ENTRY
    PREEMPT_RP = o.PREEMPT | o.R_RUNNABLE_PLUS << RS
    PREEMPT_R = o.PREEMPT | o.R_RUNNABLE << RS
    HALT = o.HALT | o.R_HLT << RS
    WAKE = o.WAKE
    EXIT_HLT = o.EXIT | o.R_HLT << RS
    EXIT_PAUSE = o.EXIT | o.R_PAUSE << RS
    EXIT_KICK = o.EXIT | o.R_KICK << RS
    EXIT_YIELD = o.EXIT | o.R_YIELD << RS
    EXIT_INTR = o.EXIT | o.R_EXTINT << RS
    EXIT_INTR_USER = o.EXIT | o.R_EXTINT_USER << RS
    CONTEND = o.CONTEND | o.R_SPIN << RS
    ACQUIRE = o.ACQUIRE
    RELEASE = o.RELEASE
    PV_HALT = o.PV_HALT
    PV_KICK = o.PV_KICK
    YIELD_TO = o.YIELD_TO
    PLE = o.PLE_WINDOW
    CSD_QUEUE = o.CSD_QUEUE
    IPI_SEND = o.IPI_SEND
    CSD_ENTRY = o.CSD_ENTRY
    CSD_EXIT = o.CSD_EXIT
