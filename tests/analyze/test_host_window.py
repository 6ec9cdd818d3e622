"""A host trace that covers less time than its guests' (pvtrace/analyze/host_window.py): the window
is the host trace's span, and the analysis of it agrees with the truth of that window."""

from __future__ import annotations

import pytest

from pvtrace.analyze import analyze
from pvtrace.analyze.run import analyze_parquet
from pvtrace.ingest.load import ingest_to_parquet, load
from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_trace
from pvtrace.simulate.scenario import load_preset
from pvtrace.simulate.truth_window import cut_truth

KEYS = ("spin_ns", "waste_lhp_ns", "n_contended")
# A window that starts mid-run knows neither the FIFO queue of waits begun before it (LWP: partial,
# as at any trace's start) nor a vCPU's state before its first host event: only a cut end gives these.
END_KEYS = ("waste_lwp_ns", "wait_preempted_ns")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    trace, _ = simulate_trace(load_preset("lhp-demo"), seed=1)
    where = tmp_path_factory.mktemp("hw")
    paths = write_rendered(trace, "ftrace", "merged", where / "h.txt")
    return trace, [p for p in paths if p.suffix == ".txt"]


def _keep(path, keep) -> None:
    """The host file with only the records `keep` takes (by position among the records)."""
    lines = path.read_text().splitlines(keepends=True)
    records = [i for i, ln in enumerate(lines) if not ln.startswith("#")]
    kept = set(keep(records))
    path.write_text("".join(ln for i, ln in enumerate(lines) if i not in records or i in kept))


@pytest.mark.parametrize("cut", ["end", "start"])
def test_a_host_trace_cut_short_is_analyzed_over_its_own_span(run, tmp_path, cut):
    """The host file cut at half its records (the audit: `head -c` on it gave harmful LHP 63 for
    19 and convoys 124 for 42, nothing flagged): the window is the host's span, a warning says the
    guests' events outside it are left out, and the figures are the truth of that window."""
    trace, texts = run
    files = []
    for p in texts:
        (tmp_path / p.name).write_text(p.read_text())
        files.append(tmp_path / p.name)
    for side in ("h.txt.vcpus.csv", "h.txt.guest-offsets.csv"):
        src = texts[0].parent / side
        if src.exists():
            (tmp_path / side).write_text(src.read_text())
    host = tmp_path / "h.txt"
    _keep(host, lambda r: r[: len(r) // 2] if cut == "end" else r[len(r) // 2 :])
    s = analyze(load(files)).summary
    t0, t1 = s.extra["t_start"], s.extra["t_end"]
    assert (t1 < 200_000_000) if cut == "end" else (t0 > 100_000_000)
    (warning,) = [w for w in s.extra["warnings"] if w.startswith("the host trace covers")]
    assert ("after it" in warning) == (cut == "end") and "leaves those guest events out" in warning
    truth = cut_truth(trace, t0, t1 + 1).totals
    for key in KEYS + (END_KEYS if cut == "end" else ()):
        assert s.totals[key] == pytest.approx(truth[key], rel=0.01, abs=2_000), key
    assert abs(s.totals["n_lhp_harmful"] - truth["n_lhp_harmful"]) <= 1
    # the same through a Parquet file (the spans travel in its metadata)
    out = tmp_path / "h.parquet"
    ingest_to_parquet(files, out)
    p = analyze_parquet(out).summary
    assert (p.extra["t_start"], p.extra["t_end"]) == (t0, t1) and p.totals == s.totals


def test_host_and_guests_traced_together_keep_the_whole_window(run):
    s = analyze(load(run[1])).summary
    assert not [w for w in s.extra.get("warnings", []) if w.startswith("the host trace covers")]
    assert s.extra["t_end"] > 290_000_000
