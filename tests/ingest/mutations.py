"""Record mutations of trace text, for the sanity property tests (simulated and real traces).

One record line of ftrace, trace-cmd report or perf script text is changed the way a corrupt
capture, a bad copy or a hand edit changes it: duplicated, moved to another line, given an
impossible CPU, pid or timestamp, or a timestamp that goes back or jumps ahead on its CPU.
"""

from __future__ import annotations

import re

# `comm-tid [cpu] flags secs.frac: ` (ftrace, trace-cmd report) and `comm tid [cpu] secs.frac: ` (perf)
DATA = re.compile(
    r"[- ](?P<tid>\d+) +(?:\([ \d-]*\) +)?\[(?P<cpu>\d+)\](?: \S+)? +(?P<secs>\d+)\.(?P<frac>\d+): "
)
HOWS = ("duplicate", "cpu", "cpu_int32", "pid_int32", "ts_int64", "back", "jump", "swap")


def _replace(line: str, m: re.Match[str], group: str, value: str) -> str:
    return line[: m.start(group)] + value + line[m.end(group) :]


def mutate(lines: list[str], i: int, how: str, amount: int) -> list[str]:
    """lines with record line i mutated (`how` in HOWS); unchanged when the mutation does not apply
    (a first record on its CPU cannot go back, two records of one instant swapped: valid traces)."""
    line = lines[i]
    m = DATA.search(line)
    out = list(lines)
    if m is None:
        return out
    if how == "duplicate":
        out.insert(i + 1, line)
    elif how == "cpu":
        out[i] = _replace(line, m, "cpu", str(10_000_000 + amount))
    elif how == "cpu_int32":
        out[i] = _replace(line, m, "cpu", str((1 << 32) + amount))
    elif how == "pid_int32":
        out[i] = _replace(line, m, "tid", str((1 << 32) + amount))
    elif how == "ts_int64":
        out[i] = line[: m.start("secs")] + f"{10**14 + amount}.{m['frac']}" + line[m.end("frac") :]
    elif how in ("back", "jump", "spike"):
        # back: earlier than the record before it on its CPU; jump: over two hours later; spike:
        # seconds later (one digit garbled), ahead of the records on both sides of it
        same_cpu = [b for b in map(DATA.search, lines[:i]) if b is not None and b["cpu"] == m["cpu"]]
        if not same_cpu:
            return out
        width = len(m["frac"])
        scale = 10**width
        prev = int(same_cpu[-1]["secs"]) * scale + int(same_cpu[-1]["frac"].ljust(width, "0")[:width])
        now = int(m["secs"]) * scale + int(m["frac"])
        now = prev - 1 - amount if how == "back" else now + (7200 if how == "jump" else 5) * scale + amount
        if now < 0:  # no time before 0 to go back to (clamping to 0 could tie with the record before)
            return out
        secs, frac = divmod(now, scale)
        out[i] = line[: m.start("secs")] + f"{secs}.{frac:0{width}d}" + line[m.end("frac") :]
    elif how == "swap" and i + 1 < len(lines):
        nxt = DATA.search(lines[i + 1])
        if nxt is not None and (nxt["secs"], nxt["frac"]) == (m["secs"], m["frac"]):
            # records printed at the same instant come in either order in a real trace (the print cut
            # their order away): the swap is another valid trace, which may read differently
            return out
        out[i], out[i + 1] = lines[i + 1], lines[i]
    return out


def data_lines(lines: list[str]) -> list[int]:
    """Indexes of the record lines."""
    return [i for i, s in enumerate(lines) if DATA.search(s)]


def problem_count(meta_problems: dict) -> int:
    """All counted problems of a loaded trace (`trace.meta.problems`: file -> kind -> info)."""
    return sum(
        info.get("count", 0)
        for kinds in meta_problems.values()
        for info in kinds.values()
        if isinstance(info, dict)
    )
