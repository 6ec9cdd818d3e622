"""Format detection by content: each format answers yes / no / need-more, with a reason.

The first bytes of an input (after decompression) are enough: binary magics for Parquet,
trace-cmd .dat and perf.data; for text, the share of lines each format's grammars read,
plus the signs that tell look-alike formats apart (trace-cmd's `cpus=` prologue, padded
event names and `name: ` prefixes versus tracefs headers and flag columns). A file no
format claims gets a FormatError that lists every format tried and why it was ruled out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pvtrace.errors import FormatError
from pvtrace.ingest import ftrace, perf_script, tracecmd
from pvtrace.ingest.records import MAIL_QUOTE, PRINTK_PREFIX, ParseOptions

YES, NO, NEED_MORE = "yes", "no", "need-more"
SNIFF_BYTES = 1 << 20
MAX_LINES = 3000
MIN_LINES = 5  # fewer candidate lines than this (and more input to come) -> need-more
MIN_SHARE = 0.5

TEXT_FORMATS = ("ftrace", "trace-cmd", "perf-script", "perf-kvm-stat", "perf-lock-contention")
ALL_FORMATS = ("parquet", "dat", *TEXT_FORMATS)

MAGIC_PARQUET = b"PAR1"
MAGIC_DAT = b"\x17\x08\x44tracing"
MAGICS_PERF_DATA = (b"PERFILE2", b"PERFFILE")

_KVM_STAT_HEADER = re.compile(
    r"^\s*(?:VM-EXIT|TRAP-EVENT|IO Port Access|MMIO Access|Event name)\s+Samples\s+Samples?%", re.M
)
_LOCK_HEADER = re.compile(r"^\s*contended\s+total wait\s+max wait\s+avg wait\b", re.M)
_PRINTK = re.compile(PRINTK_PREFIX)
_QUOTE = re.compile(MAIL_QUOTE)
_TC_PROLOGUE = re.compile(r"^\s*(?:\S+: +)?cpus=\d+\s*$|^version = \d+\s*$|^CPU \d+ is empty\s*$")
_PADDED_EVENT = re.compile(r"^[^\s:]{1,18}: {2,}\S")
# every perf script sample has `[cpu] seconds` (perf_script.SPEC.grammars: `\[(?P<cpu>\d+)\]\s+(?P<secs>\d+)`)
# ftrace.LATENCY_ABS without its free `^\s*comm` head and `rest$` tail: searching this is
# matching that, without the backtracking of `.*` over every position of the line
_LATENCY_ABS_CORE = re.compile(r"-\d+\s+\d+[^\s\d]\S*\s+\d+(?:\.\d+)?: ")
_LOST_MARK = re.compile(
    r"CPU ?:? ?\d+:? \[?(?:LOST|EVENTS|\d+ EVENTS)"
)  # every spelling: docs/lost-events.md
_PERF_NEEDS = re.compile(r"\[\d+\]\s+\d")


@dataclass
class Verdict:
    """One format's answer about an input."""

    format: str
    answer: str
    reason: str
    options: ParseOptions = field(default_factory=ParseOptions)

    def __str__(self) -> str:
        return f"{self.format}: {self.answer} ({self.reason})"


def _is_binary(head: bytes) -> bool:
    """NUL bytes, or more than 5% control characters / bytes that are not UTF-8."""
    sample = head[:8192]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    text = sample.decode("utf-8", errors="replace")
    odd = text.count("\ufffd") + sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\x0c\x1b")
    return odd > len(text) * 0.05


def _lines(head: bytes, eof: bool) -> list[str]:
    text = head.decode("utf-8", errors="replace")
    lines = text.splitlines()
    if not eof and lines and not text.endswith("\n"):
        lines = lines[:-1]  # a cut line says nothing
    return lines[:MAX_LINES]


def _strip_prefixes(lines: list[str]) -> tuple[list[str], bool, bool]:
    """Detect and strip printk `[ t] ` and mail `> ` prefixes carried by most lines."""
    nonblank = [s for s in lines if s.strip()]
    if not nonblank:
        return lines, False, False
    quote = sum(1 for s in nonblank if s.startswith(">")) >= 0.5 * len(nonblank)
    if quote:
        lines = [_QUOTE.sub("", s) for s in lines]
        nonblank = [s for s in lines if s.strip()]
    printk = sum(1 for s in nonblank if _PRINTK.match(s)) >= 0.5 * len(nonblank)
    if printk:
        lines = [_PRINTK.sub("", s) for s in lines]
    return lines, printk, quote


def _is_special(line: str) -> bool:
    """A comment, a blank line, a lost-events mark or trace-cmd's prologue: no record expected."""
    stripped = line.strip()
    return (
        not stripped
        or stripped.startswith("#")
        or ("CPU" in line and _LOST_MARK.search(line) is not None)
        or _TC_PROLOGUE.match(line) is not None
    )


def _share(
    lines: list[str], grammars, frame: str | None, needs: re.Pattern | None = None
) -> tuple[int, int, list[str], str | None]:
    """(matched, candidates, rest texts of matched lines, first unmatched line).

    `needs`, when given, is a cheap search every line the grammars read must pass: a line that
    fails it is counted unmatched without running the grammars, whose backtracking costs 50 us on
    a line of another format (perf script's on ftrace text: 0.15 s of a 0.25 s sniff).
    """
    compiled = [re.compile(g.pattern) for g in grammars]
    frame_rx = re.compile(frame) if frame else None
    matched, cands, rests, first_bad = 0, 0, [], None
    for s in lines:
        if _is_special(s) or (frame_rx is not None and frame_rx.match(s)):
            continue
        cands += 1
        for rx in compiled if needs is None or needs.search(s) else ():
            m = rx.match(s)
            if m:
                matched += 1
                rests.append(m.group("rest"))
                break
        else:
            if first_bad is None:
                first_bad = s.strip()[:80]
    return matched, cands, rests, first_bad


def _text_verdicts(lines: list[str], eof: bool) -> list[Verdict]:
    lines, printk, quote = _strip_prefixes(lines)
    text = "\n".join(lines)
    out: list[Verdict] = []
    prefix_note = (
        " (after stripping printk prefixes)" if printk else " (after stripping `> ` quotes)" if quote else ""
    )

    # summary tables first: their headers are unambiguous
    if _KVM_STAT_HEADER.search(text):
        out.append(Verdict("perf-kvm-stat", YES, "has a `VM-EXIT/Event name  Samples  Sample%` table header"))
    else:
        out.append(
            Verdict("perf-kvm-stat", NO, "no `VM-EXIT  Samples  Samples%` (or hist-style) table header")
        )
    if _LOCK_HEADER.search(text):
        out.append(
            Verdict("perf-lock-contention", YES, "has a `contended  total wait  max wait  avg wait` header")
        )
    else:
        out.append(
            Verdict("perf-lock-contention", NO, "no `contended  total wait  max wait  avg wait` header")
        )

    options = ParseOptions(printk_prefix=printk, mail_quote=quote)
    n_ft, c_ft, rests, bad_ft = _share(lines, ftrace.GRAMMARS, ftrace.FRAME)
    n_pf, c_pf, _, bad_pf = _share(lines, perf_script.SPEC.grammars, perf_script.FRAME, _PERF_NEEDS)

    def answer(n: int, c: int, bad: str | None, what: str) -> tuple[str, str]:
        if c == 0:
            return (NEED_MORE if not eof else NO), f"no {what} lines{prefix_note}"
        share = n / c
        detail = f"{n} of {c} lines read as {what}{prefix_note}"
        if share >= MIN_SHARE and n > 0:
            if n < MIN_LINES and not eof:
                return NEED_MORE, detail
            return YES, detail
        return NO, detail + (f"; e.g. {bad!r}" if bad else "")

    ans_ft, why_ft = answer(n_ft, c_ft, bad_ft, "`comm-pid [cpu] ts: event:` records")
    # trace-cmd report vs tracefs text: same record shape, told apart by trace-cmd's own marks
    prologue = sum(1 for s in lines[:50] if _TC_PROLOGUE.match(s))
    padded = sum(1 for r in rests if _PADDED_EVENT.match(r))
    prefixed = re.compile(tracecmd.PREFIXED_RECORD.pattern)
    sources = [m.group("source") for s in lines if (m := prefixed.match(s))]
    has_source = bool(rests) and len(sources) >= 0.9 * n_ft and len(set(sources)) <= 16
    latency_abs = sum(1 for s in lines if _LATENCY_ABS_CORE.search(s))
    tracefs_marks = sum(1 for s in lines[:50] if s.startswith("# tracer:") or "entries-in-buffer" in s)
    tc_signs = []
    if prologue:
        tc_signs.append("`cpus=`/`version =` prologue")
    if rests and padded >= 0.5 * len(rests):
        tc_signs.append("event names padded to 20 columns")
    if has_source:
        tc_signs.append(f"`name: ` input prefixes ({', '.join(sorted(set(sources))[:4])})")
    if latency_abs and latency_abs >= 0.5 * max(n_ft, 1):
        tc_signs.append("`-l` latency columns with absolute timestamps")
    is_tc = bool(tc_signs) and not tracefs_marks
    if ans_ft == YES:
        if is_tc:
            out.append(
                Verdict(
                    "trace-cmd", YES, why_ft + "; " + ", ".join(tc_signs), replace_opts(options, has_source)
                )
            )
            out.append(Verdict("ftrace", NO, "records carry trace-cmd report marks: " + ", ".join(tc_signs)))
        else:
            out.append(Verdict("ftrace", YES, why_ft, options))
            out.append(
                Verdict(
                    "trace-cmd", NO, "no trace-cmd marks (`cpus=` prologue, padded event names, prefixes)"
                )
            )
    elif c_ft == 0 and c_pf == 0 and eof and (tracefs_marks or prologue):
        # a header and no record at all: an empty trace is still a trace
        kind = "ftrace" if tracefs_marks else "trace-cmd"
        other = "trace-cmd" if kind == "ftrace" else "ftrace"
        out.append(Verdict(kind, YES, f"{kind} header without records (an empty trace)", options))
        out.append(Verdict(other, NO, f"{kind} header"))
    else:
        out.append(Verdict("ftrace", ans_ft, why_ft, options))
        out.append(Verdict("trace-cmd", ans_ft, why_ft, replace_opts(options, has_source)))
    ans_pf, why_pf = answer(n_pf, c_pf, bad_pf, "`comm tid [cpu] ts: sys:event:` samples")
    perf_header = any(s.startswith("# captured on") or s.startswith("# perf version") for s in lines[:60])
    if c_pf == 0 and c_ft == 0 and eof and perf_header:
        ans_pf, why_pf = YES, "perf script --header without samples (an empty trace)"
    out.append(Verdict("perf-script", ans_pf, why_pf, options))
    return out


def replace_opts(options: ParseOptions, has_source: bool) -> ParseOptions:
    return ParseOptions(
        printk_prefix=options.printk_prefix, mail_quote=options.mail_quote, has_source=has_source
    )


def sniff(head: bytes, eof: bool) -> list[Verdict]:
    """Every format's verdict on an input that starts with `head` (decompressed bytes)."""
    if head.startswith(MAGIC_PARQUET):
        return [Verdict("parquet", YES, "Parquet magic `PAR1`")] + [
            Verdict(f, NO, "Parquet file") for f in ALL_FORMATS if f != "parquet"
        ]
    if head.startswith(MAGIC_DAT):
        return [Verdict("dat", YES, "trace-cmd .dat magic")] + [
            Verdict(f, NO, "trace-cmd .dat file") for f in ALL_FORMATS if f != "dat"
        ]
    verdicts = [
        Verdict("parquet", NO, "no `PAR1` magic"),
        Verdict("dat", NO, "no trace-cmd .dat magic (\\x17\\x08Dtracing)"),
    ]
    if head.startswith(MAGICS_PERF_DATA):
        why = "perf.data binary: convert it first with `perf script -i FILE > FILE.txt`"
        return verdicts + [Verdict(f, NO, why) for f in TEXT_FORMATS]
    if _is_binary(head):
        return verdicts + [Verdict(f, NO, "binary data, not text") for f in TEXT_FORMATS]
    lines = _lines(head, eof)
    if not any(s.strip() for s in lines):
        why = "empty file" if eof else "no text yet"
        return verdicts + [Verdict(f, NO if eof else NEED_MORE, why) for f in TEXT_FORMATS]
    return verdicts + _text_verdicts(lines, eof)


FORMAT_ALIASES = {"perf": "perf-script", "tracecmd": "trace-cmd", "trace-cmd": "trace-cmd"}


def detect_format(head: bytes, eof: bool, path: str, forced: str = "auto") -> Verdict:
    """The format to read an input with; FormatError listing every verdict when none fits."""
    verdicts = sniff(head, eof)
    if forced != "auto":
        name = FORMAT_ALIASES.get(forced, forced)
        for v in verdicts:
            if v.format == name:
                if v.answer == NO:
                    raise FormatError(f"is not {forced} text: {v.reason}", path)
                return v
        raise FormatError(f"unknown format {forced!r}; use one of auto, {', '.join(ALL_FORMATS)}", path)
    for v in verdicts:
        if v.answer == YES:
            return v
    for v in verdicts:
        if v.answer == NEED_MORE:
            return v
    text_reasons = {v.reason for v in verdicts if v.format in TEXT_FORMATS}
    if text_reasons in ({"empty file"}, {"binary data, not text"}):  # one word for it, not seven
        raise FormatError(f"not a trace pvtrace can read: {text_reasons.pop()}", path)
    tried = "; ".join(f"{v.format}: {v.reason}" for v in verdicts)
    raise FormatError(f"not a trace pvtrace can read. Tried {tried}", path)
