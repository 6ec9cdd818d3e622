"""Issue 16 experiment: can a compiled per-line parser (numba) carry ingest to 300 MB/s?

    python benchmarks/bench_numba_kernel.py                  # the kernel alone, and with its frame
    python benchmarks/bench_numba_kernel.py --stages today   # CPU per stage, one polars thread
    python benchmarks/bench_numba_kernel.py --stages kernel  # the same with the kernel patched in
    python benchmarks/bench_numba_kernel.py --e2e --size-gb 1 --repeat 2   # whole ingest, both ways
    python benchmarks/bench_numba_kernel.py --jit            # JIT compile time, cold and from cache

A prototype, not the ingest path (needs numba, which pvtrace does not depend on). One numba pass
per line over a block of the file's bytes cuts the fixed fields (comm, pid, cpu, flags, ts in
ns, event id) and the payload fields normalize needs for the hot families (sched_switch,
sched_wakeup, kvm_exit, kvm_entry, kvm_hypercall, kvm_vcpu_wakeup, contention_begin / end)
into numpy arrays; text fields become Arrow string views into the block (zero copy). Lines or
payloads of another shape are marked and left to the polars parsers. `--e2e` and `--stages`
monkeypatch that into `pvtrace ingest` (the raw frame carries the kernel's fields, normalize
takes them instead of running the payload parsers) and check the events are equal to today's.
Files: benchmarks/.data/host-<size>GB.txt, made by bench_ingest.py (default --size-gb 0.1).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

DATA = Path(__file__).resolve().parent / ".data"
BLOCK = 32 << 20

# event ids (0 = any other name; its name is cut as text and looked up once per distinct name)
EVENTS = (
    "other",
    "sched_switch",
    "sched_wakeup",
    "kvm_exit",
    "kvm_entry",
    "kvm_hypercall",
    "kvm_vcpu_wakeup",
    "contention_begin",
    "contention_end",
)
_NAMES = np.frombuffer(b"".join(e.encode() for e in EVENTS), dtype=np.uint8)
_NAME_OFF = np.cumsum([0, *(len(e) for e in EVENTS)]).astype(np.int64)


@njit(inline="always")
def starts(buf, i, end, pat):
    if end - i < len(pat):
        return False
    for k in range(len(pat)):  # noqa: SIM110 (numba compiles a loop, not a generator)
        if buf[i + k] != pat[k]:
            return False
    return True


@njit(inline="always")
def find(buf, i, end, pat):
    """First index >= i where pat starts before end, else -1."""
    n = len(pat)
    first = pat[0]
    j = i
    while j + n <= end:
        if buf[j] == first:
            ok = True
            for k in range(1, n):
                if buf[j + k] != pat[k]:
                    ok = False
                    break
            if ok:
                return j
        j += 1
    return -1


@njit(inline="always")
def digits(buf, i, end):
    """(value, index after) of decimal digits at i; index == i when none."""
    v = 0
    j = i
    while j < end and 48 <= buf[j] <= 57 and j - i < 18:
        v = v * 10 + (buf[j] - 48)
        j += 1
    return v, j


@njit(inline="always")
def hexdigits(buf, i, end):
    v = np.uint64(0)
    j = i
    while j < end and j - i < 16:
        c = buf[j]
        if 48 <= c <= 57:
            d = c - 48
        elif 97 <= c <= 102:
            d = c - 87
        elif 65 <= c <= 70:
            d = c - 55
        else:
            break
        v = v * np.uint64(16) + np.uint64(d)
        j += 1
    return v, j


PREV_PID = np.frombuffer(b" prev_pid=", np.uint8)
PREV_PRIO = np.frombuffer(b" prev_prio=", np.uint8)
PREV_STATE = np.frombuffer(b" prev_state=", np.uint8)
NEXT_COMM = np.frombuffer(b" next_comm=", np.uint8)
NEXT_PID = np.frombuffer(b" next_pid=", np.uint8)
ARROW = np.frombuffer(b" ==>", np.uint8)
PREV_COMM = np.frombuffer(b"prev_comm=", np.uint8)
COMM_EQ = np.frombuffer(b"comm=", np.uint8)
PID_EQ = np.frombuffer(b" pid=", np.uint8)
TARGET = np.frombuffer(b"target_cpu=", np.uint8)
SUCCESS = np.frombuffer(b" success=", np.uint8)
VCPU_SP = np.frombuffer(b"vcpu ", np.uint8)
REASON = np.frombuffer(b"reason ", np.uint8)
RIP = np.frombuffer(b" rip 0x", np.uint8)
NR = np.frombuffer(b"nr ", np.uint8)
A0 = np.frombuffer(b" a0 ", np.uint8)
A1 = np.frombuffer(b" a1 ", np.uint8)
X0 = np.frombuffer(b"0x", np.uint8)
TIME = np.frombuffer(b" time ", np.uint8)
NS = np.frombuffer(b" ns", np.uint8)
FLAGS_EQ = np.frombuffer(b" (flags=", np.uint8)
RET_EQ = np.frombuffer(b" (ret=", np.uint8)

# string fields of a line, as Arrow string views into the block (16 bytes each)
STRINGS = ("comm", "flags", "event_name", "payload", "s1", "s2", "s3", "text")
COMM, FLAGS, EVNAME, PAYLOAD, S1, S2, S3, TEXT = range(len(STRINGS))
_HI = np.uint64(0x8080808080808080)
_LO = np.uint64(0x0101010101010101)
_NL = np.uint64(0x0A0A0A0A0A0A0A0A)


@njit(nogil=True, cache=True)
def line_ends(buf, words):
    """Newline positions (plus len(buf) when the last line has none) and whether buf is ASCII.
    words: buf's first len(buf) // 8 * 8 bytes as uint64 (newlines found 8 bytes at a time)."""
    n = 0
    high = 0
    for b in buf:
        n += b == 10
        high |= b
    last = len(buf) > 0 and buf[len(buf) - 1] != 10
    ends = np.empty(n + last, np.int64)
    k = 0
    for w in range(len(words)):
        x = words[w] ^ _NL
        if (x - _LO) & ~x & _HI:
            for i in range(8 * w, 8 * w + 8):
                if buf[i] == 10:
                    ends[k] = i
                    k += 1
    for i in range(8 * len(words), len(buf)):
        if buf[i] == 10:
            ends[k] = i
            k += 1
    if last:
        ends[k] = len(buf)
    return ends, high < 128


@njit(inline="always")
def view(views, valid, f, li, buf, off, ln):
    """Arrow string view of buf[off:off + ln] (inline up to 12 bytes, else prefix + offset)."""
    valid[f, li] = 1
    v = views[f, li]
    v[0] = ln
    if ln > 12:
        v[1] = buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (np.int32(buf[off + 3]) << 24)
        v[2] = 0
        v[3] = off
        return
    v[1] = 0
    v[2] = 0
    v[3] = 0
    for k in range(ln):
        v[1 + (k >> 2)] |= np.int32(buf[off + k]) << (8 * (k & 3))


@njit(nogil=True, cache=True)
def scan(buf, words, names, name_off, fields=True):
    """One pass per line: fixed fields and hot-family payload fields. ok=0: the line is left
    to the polars parser; pok=0: its payload to the polars payload parser."""
    ends, ascii_block = line_ends(buf, words)
    n = len(ends)
    ok = np.zeros(n, np.uint8)
    views = np.zeros((8, n, 4), np.int32)  # a null slot must hold a valid (empty) view
    svalid = np.zeros((8, n), np.uint8)
    tid = np.zeros(n, np.int32)
    cpu = np.zeros(n, np.int32)
    ts = np.zeros(n, np.int64)
    eid = np.zeros(n, np.int8)
    pok = np.zeros(n, np.uint8)
    i1 = np.zeros(n, np.int64)  # prev_pid / pid / vcpu / nr / time_ns / lock
    i2 = np.zeros(n, np.int64)  # next_pid / target_cpu / guest_user / a0 / ret
    i3 = np.zeros(n, np.int64)  # success / a1
    valid = np.zeros(n, np.uint8)  # bit 0: i1, 1: i2, 2: i3
    n_names = len(name_off) - 1
    pos = 0
    for li in range(n):
        s = pos
        e = ends[li]
        pos = e + 1
        if e > s and buf[e - 1] == 13:
            e -= 1
        if not ascii_block:
            high = 0
            for p in range(s, e):
                high |= buf[p]
            if high >= 128:
                continue
        # --- fixed fields: `<comm>-<tid> [<cpu>] <flags> <secs>.<frac>: <event>: <payload>`
        i = s
        while i < e and buf[i] == 32:
            i += 1
        cs = i
        lb = i
        while lb < e and buf[lb] != 91:  # the first '[': the CPU's
            lb += 1
        if lb >= e:
            continue
        j = lb - 1
        while j > cs and buf[j] == 32:
            j -= 1
        te = j + 1
        while j > cs and 48 <= buf[j] <= 57:
            j -= 1
        if buf[j] != 45 or j + 1 == te or te - j - 1 > 9:
            continue
        tid[li] = digits(buf, j + 1, te)[0]
        c, k = digits(buf, lb + 1, e)
        if k == lb + 1 or k >= e or buf[k] != 93 or k - lb - 1 > 5:
            continue
        cpu[li] = c
        k += 1
        while k < e and buf[k] == 32:
            k += 1
        fs = k
        fe = k
        if k < e and not (48 <= buf[k] <= 57):
            while k < e and buf[k] != 32:
                k += 1
            fe = k
            while k < e and buf[k] == 32:
                k += 1
        secs, k2 = digits(buf, k, e)
        if k2 == k or k2 >= e or buf[k2] != 46 or k2 - k > 10:
            continue
        frac, k3 = digits(buf, k2 + 1, e)
        w = k3 - k2 - 1
        if w == 0 or w > 9 or k3 + 1 >= e or buf[k3] != 58 or buf[k3 + 1] != 32:
            continue
        for _ in range(9 - w):
            frac *= 10
        es = k3 + 2
        k = es
        while k + 1 < e and buf[k] != 58 and buf[k] != 32:
            k += 1
        if k + 1 >= e or buf[k] != 58 or buf[k + 1] != 32:
            continue
        ps = k + 2
        while ps < e and buf[ps] == 32:
            ps += 1
        pe = e
        while pe > ps and buf[pe - 1] == 32:
            pe -= 1
        ok[li] = 1
        ts[li] = secs * 1_000_000_000 + frac
        view(views, svalid, COMM, li, buf, cs, j - cs)
        if fe > fs:
            view(views, svalid, FLAGS, li, buf, fs, fe - fs)
        view(views, svalid, PAYLOAD, li, buf, ps, pe - ps)
        ev = 0
        ln = k - es
        for q in range(1, n_names):
            a, b = name_off[q], name_off[q + 1]
            if b - a == ln and buf[es] == names[a]:
                same = True
                for r in range(1, ln):
                    if buf[es + r] != names[a + r]:
                        same = False
                        break
                if same:
                    ev = q
                    break
        eid[li] = ev
        if ev == 0:
            view(views, svalid, EVNAME, li, buf, es, ln)
        if not fields:
            continue
        # --- payload fields of the hot families (kernel print formats only)
        if ev == 1:  # sched_switch
            if not starts(buf, ps, pe, PREV_COMM):
                continue
            a = find(buf, ps, pe, PREV_PID)
            b = find(buf, ps, pe, PREV_PRIO)
            c3 = find(buf, ps, pe, PREV_STATE)
            d = find(buf, ps, pe, NEXT_COMM)
            f = find(buf, ps, pe, NEXT_PID)
            if a < 0 or b < 0 or c3 < 0 or d < 0 or f < 0 or b < a + 10 or d < c3 + 12 or f < d + 11:
                continue
            view(views, svalid, S1, li, buf, ps + 10, a - ps - 10)
            v, x = digits(buf, a + 10, b)
            if x != b:
                continue
            i1[li] = v
            st = d
            if st - c3 - 12 >= 4 and starts(buf, st - 4, st, ARROW):
                st -= 4
            view(views, svalid, S2, li, buf, c3 + 12, st - c3 - 12)
            view(views, svalid, S3, li, buf, d + 11, f - d - 11)
            v, x = digits(buf, f + 10, pe)
            if x == f + 10:
                continue
            i2[li] = v
            valid[li] = 3
            pok[li] = 1
        elif ev == 2:  # sched_wakeup
            if not starts(buf, ps, pe, COMM_EQ):
                continue
            a = find(buf, ps, pe, PID_EQ)
            if a < 0:
                continue
            view(views, svalid, S1, li, buf, ps + 5, a - ps - 5)
            v, x = digits(buf, a + 5, pe)
            if x == a + 5 or x >= pe or buf[x] != 32:
                continue
            i1[li] = v
            t = find(buf, ps, pe, TARGET)
            if t >= 0:
                v, x = digits(buf, t + 11, pe)
                if x > t + 11:
                    i2[li] = v
                    valid[li] |= 2
            u = find(buf, ps, pe, SUCCESS)
            if u >= 0:
                v, x = digits(buf, u + 9, pe)
                if x > u + 9:
                    i3[li] = v
                    valid[li] |= 4
            valid[li] |= 1
            pok[li] = 1
        elif ev == 3:  # kvm_exit, x86 text form
            if not starts(buf, ps, pe, VCPU_SP):
                continue
            v, x = digits(buf, ps + 5, pe)
            if x == ps + 5 or x >= pe or buf[x] != 32:
                continue
            r = find(buf, ps, pe, REASON)
            t = find(buf, ps, pe, RIP)
            if r < 0 or t < r + 7:
                continue
            i1[li] = v
            view(views, svalid, S1, li, buf, r + 7, t - r - 7)
            rip, y = hexdigits(buf, t + 7, pe)
            valid[li] = 1
            if y > t + 7 and np.uint64(1 << 32) <= rip < np.uint64(1 << 47):
                i2[li] = 1
                valid[li] |= 2
            pok[li] = 1
        elif ev == 4:  # kvm_entry
            if not starts(buf, ps, pe, VCPU_SP):
                continue
            v, x = digits(buf, ps + 5, pe)
            if x == ps + 5:
                continue
            i1[li] = v
            valid[li] = 1
            pok[li] = 1
        elif ev == 5:  # kvm_hypercall `nr 0x5 a0 0x0 a1 0x3 ...`
            if not starts(buf, ps, pe, NR):
                continue
            got = 0
            for slot in range(3):
                if slot == 0:
                    at = ps + 3
                else:
                    at = find(buf, ps, pe, A0 if slot == 1 else A1)
                    if at < 0:
                        break
                    at += 4
                if starts(buf, at, pe, X0):
                    at += 2
                h, y = hexdigits(buf, at, pe)
                if y == at:
                    break
                if slot == 0:
                    i1[li] = np.int64(h)
                elif slot == 1:
                    i2[li] = np.int64(h)
                else:
                    i3[li] = np.int64(h)
                got += 1
            if got < 3:
                continue
            valid[li] = 7
            pok[li] = 1
        elif ev == 6:  # kvm_vcpu_wakeup `wait time 25150 ns, polling valid`
            t = find(buf, ps, pe, TIME)
            if t < 0 or t - ps != 4:
                continue
            wait = buf[ps] == 119 and buf[ps + 1] == 97 and buf[ps + 2] == 105 and buf[ps + 3] == 116
            poll = buf[ps] == 112 and buf[ps + 1] == 111 and buf[ps + 2] == 108 and buf[ps + 3] == 108
            if not (wait or poll):
                continue
            v, x = digits(buf, t + 6, pe)
            if x == t + 6 or not starts(buf, x, pe, NS):
                continue
            view(views, svalid, S2, li, buf, ps, 4)
            i1[li] = v
            valid[li] = 1
            pok[li] = 1
        elif ev == 7 or ev == 8:  # contention_begin / end `00000000deadbe06 (flags=SPIN)`
            at = ps
            if starts(buf, at, pe, X0):
                at += 2
            h, y = hexdigits(buf, at, pe)
            if y == at or y - at > 16:
                continue
            i1[li] = np.int64(h)
            if ev == 7:
                if not starts(buf, y, pe, FLAGS_EQ):
                    continue
                z = y + 8
                while z < pe and buf[z] != 41:
                    z += 1
                if z >= pe:
                    continue
                view(views, svalid, S1, li, buf, y + 8, z - y - 8)
                valid[li] = 1
            else:
                if not starts(buf, y, pe, RET_EQ):
                    continue
                neg = 1 if y + 6 < pe and buf[y + 6] == 45 else 0
                v, x = digits(buf, y + 6 + neg, pe)
                if x == y + 6 + neg or x >= pe or buf[x] != 41:
                    continue
                i2[li] = -v if neg else v
                valid[li] = 3
            pok[li] = 1
    pos = 0
    for li in range(n):  # the lines left to the polars parser keep their text
        if not ok[li]:
            view(views, svalid, TEXT, li, buf, pos, ends[li] - pos)
        pos = ends[li] + 1
    return ok, views, svalid, tid, cpu, ts, eid, pok, i1, i2, i3, valid


def words_of(buf):
    """buf's whole 8-byte words as uint64 (buf from blocks(): 8-aligned)."""
    return buf[: len(buf) // 8 * 8].view(np.uint64)


_EVENT_DICT = None  # the event names as a pyarrow array (made on first use)


def blocks(path: Path, size: int = BLOCK):
    """Blocks of whole lines as uint8 arrays of their own (read into numpy memory: 8-aligned)."""
    carry = np.empty(0, np.uint8)
    with open(path, "rb") as f:
        while True:
            buf = np.empty(len(carry) + size, np.uint8)
            buf[: len(carry)] = carry
            got = f.readinto(memoryview(buf)[len(carry) :])
            end = len(carry) + got
            if got == 0:
                if end:
                    yield buf[:end]
                return
            cut = 0
            for back in (1 << 16, end):  # the last newline, looked for near the end first
                nl = np.flatnonzero(buf[max(end - back, 0) : end] == 10)
                if len(nl):
                    cut = max(end - back, 0) + int(nl[-1]) + 1
                    break
            carry = buf[cut:end].copy()
            if cut:
                yield buf[:cut]


def run(buf, fields=True):
    return scan(buf, words_of(buf), _NAMES, _NAME_OFF, fields)


def cpu_time() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def measure_kernel(path: Path, repeat: int) -> None:
    t = time.perf_counter()
    first = next(blocks(path, 1 << 16))
    prepared_batch(first, run(first), 1)
    print(f"compile or load from cache + first block: {time.perf_counter() - t:.2f}s", flush=True)
    size = path.stat().st_size
    data = list(blocks(path))  # in memory: the kernel's speed, not the disk's
    steps = (
        ("kernel, fixed fields", lambda buf: run(buf, False)),
        ("kernel, all fields", run),
        ("kernel + frame", lambda buf: prepared_batch(buf, run(buf), 1)),
    )
    n = sum(len(run(buf, False)[0]) for buf in data)
    out = [run(buf) for buf in data]
    n_ok = sum(int(o[0].sum()) for o in out)
    n_pok = sum(int(o[7].sum()) for o in out)
    print(f"lines {n}, fixed fields cut {n_ok}, payload fields cut {n_pok}")
    for label, fn in steps:
        walls, cpus = [], []
        for _ in range(repeat):
            c, t = cpu_time(), time.perf_counter()
            for buf in data:
                fn(buf)
            walls.append(time.perf_counter() - t)
            cpus.append(cpu_time() - c)
        w, cp = statistics.median(walls), statistics.median(cpus)
        print(
            f"{label:22s} {size / 1e6 / w:7.1f} MB/s  {w:6.2f}s  cpu {cp:6.2f}s  {cp / n * 1e9:5.0f} ns/line",
            flush=True,
        )


# --- end to end: the kernel in place of the parse stage and the payload parsers (monkeypatched) ----
EXTRAS = {
    "pok": "Boolean", "i1": "Int64", "i2": "Int64", "i3": "Int64", "s1": "String", "s2": "String", "s3": "String",
}  # fmt: skip


def prepared_batch(buf, out, first_line):
    """A batch shaped as records.layout_query's (line, ok, raw fields, text) plus the kernel fields."""
    import polars as pl
    import pyarrow as pa

    ok, views, svalid, tid, cpu, ts, eid, pok, i1, i2, i3, valid = out
    n = len(ok)
    data = pa.py_buffer(buf)

    def strings(f):
        m = svalid[f]
        bitmap = None if m.all() else pa.py_buffer(np.packbits(m, bitorder="little"))
        return pl.from_arrow(
            pa.Array.from_buffers(pa.string_view(), n, [bitmap, pa.py_buffer(views[f]), data])
        )

    def ints(a, bit):
        return pl.from_arrow(pa.array(a, mask=(valid & bit) == 0))

    global _EVENT_DICT
    if _EVENT_DICT is None:
        _EVENT_DICT = pa.array(list(EVENTS))
    event = pl.from_arrow(pa.DictionaryArray.from_arrays(eid.astype(np.int32), _EVENT_DICT))
    if (eid == 0).any():
        event = pl.select(pl.when(pl.Series(eid == 0)).then(strings(EVNAME)).otherwise(event.cast(pl.String)))
        event = event.to_series()
    okb = pl.Series(ok.view(np.bool_))
    return pl.DataFrame(
        {
            "line": np.arange(first_line, first_line + n, dtype=np.int64),
            "ok": okb,
            "source": pl.repeat(None, n, dtype=pl.Categorical, eager=True),
            "comm": strings(COMM),
            "tid": pl.Series(tid).set(~okb, None),
            "tgid": pl.repeat(None, n, dtype=pl.Int32, eager=True),
            "cpu": pl.Series(cpu).set(~okb, None),
            "flags": strings(FLAGS),
            "ts": pl.Series(ts).set(~okb, None),
            "system": pl.repeat(None, n, dtype=pl.Categorical, eager=True),
            "event": pl.Series(event).cast(pl.Categorical).set(~okb, None),
            "payload": strings(PAYLOAD),
            "text": strings(TEXT),
            "pok": pok.view(np.bool_),
            "s1": strings(S1),
            "s2": strings(S2),
            "s3": strings(S3),
            "i1": ints(i1, 1),
            "i2": ints(i2, 2),
            "i3": ints(i3, 4),
        }
    )


def install_kernel() -> None:
    """Monkeypatch ingest: the kernel cuts plain files, its fields replace the hot payload parsers."""
    import polars as pl

    from pvtrace.ingest import families, normalize, payloads, stream
    from pvtrace.ingest.aliases import ALIASES
    from pvtrace.ingest.raw import RAW_SCHEMA

    for name, dtype in EXTRAS.items():  # the raw frame carries the kernel's fields
        RAW_SCHEMA[name] = getattr(pl, dtype)()

    def prepared_file(self, path):
        first = 1
        held = None
        for buf in blocks(path):
            batch = prepared_batch(buf, run(buf), first)
            first += batch.height
            self.info.n_bytes += len(buf)
            held = batch if held is None else pl.concat([held, batch])
            while held.height >= stream.BATCH_ROWS:  # today's batches: the same chunking downstream
                yield held.slice(0, stream.BATCH_ROWS)
                held = held.slice(stream.BATCH_ROWS)
        if held is not None and held.height:
            yield held
        self.ends_mid_line = stream._ends_mid_line(path)

    stream.RawStream._prepared_file = prepared_file
    orig_prepare = normalize.prepare

    def prepare(raw):
        frame, n_untimed = orig_prepare(raw)
        extras = [c for c in EXTRAS if c in raw.columns]
        # rows the polars parser cut (pok null) take the payload parsers
        return frame.hstack(raw.select(extras).with_columns(pl.col("pok").fill_null(False))), n_untimed

    normalize.prepare = prepare
    c = pl.col
    build = {
        "switch": lambda df: payloads._via_unique(
            df.with_columns(
                c("s1").alias("prev_comm"), c("s3").alias("next_comm"), c("s2").alias("_prev_state"),
                c("i1").cast(pl.Int32).alias("prev_pid"), c("i2").cast(pl.Int32).alias("next_pid"),
            ), "_prev_state", payloads.task_state(c("_prev_state")), "prev_state",
        ).drop("_prev_state"),
        "wake": lambda df: df.with_columns(
            c("s1").alias("woken_comm"), c("i1").cast(pl.Int32).alias("pid"),
            c("i2").cast(pl.Int32).alias("target_cpu"), c("i3").cast(pl.Int8).alias("success"),
        ),
        "exit": lambda df: df.with_columns(
            c("i1").cast(pl.Int32).alias("vcpu"), c("s1").alias("reason"), c("i2").alias("guest_user"),
            pl.lit(None, pl.String).alias("arm_kind"), pl.lit(None, pl.String).alias("arm_class"),
            pl.lit(None, pl.Int64).alias("reason_code"), pl.lit(None, pl.Int8).alias("isa"),
        ),
        "entry": lambda df: df.with_columns(c("i1").cast(pl.Int32).alias("vcpu")),
        "hypercall": lambda df: df.with_columns(c("i1").alias("nr"), c("i2").alias("a0"), c("i3").alias("a1")),
        "vcpu_wakeup": lambda df: df.with_columns(c("s2").alias("how"), c("i1").alias("time_ns")),
    }  # fmt: skip
    orig_groups = normalize.parse_groups
    templates = {}

    def parse_groups(frame, groups):
        if "pok" not in frame.columns:
            return orig_groups(frame, groups)
        slow = [g for g in groups if g not in build]
        parsed = orig_groups(frame.drop(*EXTRAS), {g: groups[g] for g in slow}) if slow else {}
        cols = [x for x in ("row", "src", "tid", "cpu", "ts", "event", "payload", "vm") if x in frame.columns]
        for g in groups:
            if g in slow:
                continue
            events = families.GROUPS[g]
            parser = ALIASES[events[0]].parser
            rows = frame.select(*cols, *EXTRAS).filter(c("event").is_in(list(events)))
            key = (g, tuple(rows.select(cols).schema.items()))
            if key not in templates:  # the parser's columns (an empty parse compiles its regexes: once)
                templates[key] = parser(rows.select(cols).clear()).schema
            template = templates[key]
            fast = build[g](rows.filter(c("pok"))).select(template.names()).cast(template)
            left = rows.filter(~c("pok"))
            parsed[g] = pl.concat([fast, parser(left.select(cols))]).sort("row") if left.height else fast
        if "exit" in parsed and "exit" in build:  # the reasons normalized as parse_groups does
            parsed["exit"] = _norm_reasons(parsed["exit"])
        return parsed

    normalize.parse_groups = parse_groups


def _norm_reasons(exit_rows):
    import polars as pl

    from pvtrace.ingest import aliases

    keys = ["reason", "arm_kind", "arm_class", "reason_code", "isa"]
    reasons = (
        exit_rows.select(keys)
        .unique()
        .with_columns(
            pl.coalesce(
                aliases.exit_reason(pl.col("reason")),
                aliases.exit_reason_arm64(pl.col("arm_kind"), pl.col("arm_class")),
                aliases.exit_reason_code(pl.col("reason_code"), pl.col("isa")),
            )
            .cast(pl.Categorical)
            .alias("norm_reason")
        )
    )
    if reasons["reason"].null_count() == 0:
        norm = pl.col("reason").replace_strict(reasons["reason"], reasons["norm_reason"], default=None)
        return exit_rows.with_columns(norm.alias("norm_reason"))
    return exit_rows.join(reasons, on=keys, how="left", nulls_equal=True)


def e2e_child(path: Path, out: Path, kernel: bool) -> None:
    """One `pvtrace ingest` of path to out (kernel: with the monkeypatches), wall / CPU / peak as JSON."""
    import json

    if kernel:
        install_kernel()
    from pvtrace.ingest.load import ingest_to_parquet

    c, t = cpu_time(), time.perf_counter()
    ingest_to_parquet([path], out, force=True)
    wall, cpu = time.perf_counter() - t, cpu_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak}))


def measure_e2e(path: Path, repeat: int) -> None:
    import json

    import polars as pl

    size = path.stat().st_size
    outs = {k: path.with_suffix(f".{k}.parquet") for k in ("today", "kernel")}
    got: dict[str, list[dict]] = {k: [] for k in outs}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)]),
    }
    for _ in range(repeat):
        for k, out in outs.items():
            cmd = [sys.executable, __file__, "--e2e-child", k, "--file", str(path), "--out", str(out)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(res.stderr)
            got[k].append(json.loads(res.stdout.strip().splitlines()[-1]))
    for k, runs in got.items():
        w = statistics.median(r["wall"] for r in runs)
        cp = statistics.median(r["cpu"] for r in runs)
        pk = max(r["peak"] for r in runs) / 2**30
        print(
            f"ingest {k:7s} {size / 1e6 / w:7.1f} MB/s  wall {w:6.2f}s of {[round(r['wall'], 2) for r in runs]}  "
            f"cpu {cp:6.2f}s  peak {pk:.2f} GiB",
            flush=True,
        )
    a, b = pl.read_parquet(outs["today"]), pl.read_parquet(outs["kernel"])
    print(f"events equal: {a.equals(b)} ({a.height} rows)")


def measure_stages(path: Path, kernel: bool) -> None:
    """CPU per line of each stage run one after the other on one polars thread: the parse to raw
    frames (read_raw), sanity and normalize per 250k-line chunk with the carry (parse_groups
    apart), the Parquet encoding of the events with each codec (pyarrow, pvtrace's options)."""
    os.environ["POLARS_MAX_THREADS"] = "1"
    import polars as pl
    import pyarrow.parquet as pq

    if kernel:
        install_kernel()
        warm = next(blocks(path, 1 << 16))
        prepared_batch(warm, run(warm), 1)  # numba imported and the kernel loaded: not counted
    from pvtrace import trace
    from pvtrace.ingest import normalize
    from pvtrace.ingest.load import read_raw
    from pvtrace.ingest.problems import Problems
    from pvtrace.ingest.sanity import Sanity

    t = cpu_time()
    raw, _, _ = read_raw(path)
    t_parse = cpu_time() - t
    n = raw.height
    in_groups = [0.0]
    parse_groups = normalize.parse_groups

    def timed(*a, **k):
        t = cpu_time()
        out = parse_groups(*a, **k)
        in_groups[0] += cpu_time() - t
        return out

    normalize.parse_groups = timed
    sane = Sanity(Problems(str(path)))
    t_sane = t_norm = 0.0
    carry = None
    events = []
    for start in range(0, n, 250_000):
        t = cpu_time()
        chunk = sane.check(raw.slice(start, 250_000))
        t_sane += cpu_time() - t
        t = cpu_time()
        ev, info = normalize.normalize(chunk, carry=carry)
        t_norm += cpu_time() - t
        carry = info["carry"]
        events.append(ev)

    def us(x: float) -> str:
        return f"{x / n * 1e6:.3f} us/line"

    print(f"lines {n} ({'kernel' if kernel else 'today'})")
    print(f"parse (read_raw)  {us(t_parse)}")
    print(f"sanity            {us(t_sane)}")
    print(
        f"normalize         {us(t_norm)}  (parse_groups {us(in_groups[0])}, the rest {us(t_norm - in_groups[0])})"
    )
    schema = events[0].to_arrow().schema
    names = set(schema.names)
    out = path.with_suffix(".stages.parquet")
    for codec in ("zstd", "lz4", "snappy", "none"):
        best = float("inf")
        for _ in range(3):
            t = cpu_time()
            w = pq.ParquetWriter(
                out,
                schema,
                compression=codec,
                use_dictionary=[c for c in trace._DICTIONARY if c in names],
                write_statistics=[c for c in trace._STATISTICS if c in names],
            )
            for ev in events:
                w.write_table(ev.to_arrow())
            w.close()
            best = min(best, cpu_time() - t)
        print(f"encode {codec:10s} {us(best)}  {out.stat().st_size / 1e6:.2f} MB (best of 3)")
    out.unlink()
    del pl


def measure_jit() -> None:
    """Compile time with an empty cache (cold) and from the cache, each in a fresh process."""
    import shutil
    import tempfile

    code = (
        "import time; t=time.perf_counter(); import numpy as np, numba; t1=time.perf_counter();"
        "import bench_numba_kernel as b;"
        "buf=np.frombuffer(b'  a-1 [000] d..2. 1.000001: kvm_entry: vcpu 0\\n', np.uint8).copy();"
        "t2=time.perf_counter(); b.run(buf); t3=time.perf_counter();"
        "print(f'{t1-t:.2f} {t3-t2:.2f}')"
    )
    cache = Path(tempfile.mkdtemp(prefix="numba-cache-"))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(Path(__file__).parent)}
    try:
        for label in ("cold (empty cache)", "cached", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            imp, comp = out.stdout.split()
            print(
                f"{label:20s} import numba {imp}s, kernel compiled or loaded + first call {comp}s", flush=True
            )
    finally:
        shutil.rmtree(cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jit", action="store_true", help="measure the compile time instead")
    ap.add_argument("--e2e", action="store_true", help="pvtrace ingest today vs with the kernel patched in")
    ap.add_argument("--stages", choices=("today", "kernel"), help="CPU per stage on one polars thread")
    ap.add_argument("--e2e-child", choices=("today", "kernel"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.e2e_child:
        e2e_child(Path(args.file), Path(args.out), args.e2e_child == "kernel")
        return
    if args.jit:
        measure_jit()
        return
    path = DATA / f"host-{args.size_gb:g}GB.txt"
    if not path.exists():
        raise SystemExit(f"{path}: missing; run benchmarks/bench_ingest.py first (it generates it)")
    if args.stages:
        measure_stages(path, args.stages == "kernel")
    elif args.e2e:
        measure_e2e(path, args.repeat)
    else:
        measure_kernel(path, args.repeat)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
