"""Fault injection through the real command line: signals at random points of every command, a full
disk, read-only folders, outputs that are inputs, concurrent writers. Whatever happens: no
traceback, the right exit code, no temporary file left, and each command's outputs are all there
and complete (byte-equal to an undisturbed run) or none of them is (files already there intact).

Each command gets two signalled runs (one over files already there, with --force), the signals
rotating over commands; PVTRACE_FAULT_ROUNDS=3 sends every signal to every command (CI keeps 1),
PVTRACE_FAULT_SEED picks other random times (the failing delay is in the message).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from faults import (
    SMALL_SCENARIO,
    Done,
    assert_clean_exit,
    assert_one_line_error,
    env,
    files_under,
    finish,
    run,
    run_all,
    signal_after,
    start,
    temp_leftovers,
    tmpfs,
)

SEED = int(os.environ.get("PVTRACE_FAULT_SEED", "17"))
ROUNDS = int(os.environ.get("PVTRACE_FAULT_ROUNDS", "1"))
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# Every command that writes files, its outputs under out/ (a folder that does not exist yet:
# the one rule is that missing folders are created).
COMMANDS: dict[str, list[str]] = {
    "generate": [
        "generate",
        "{in}/small.toml",
        "-o",
        "out/g.txt",
        "--format",
        "ftrace",
        "--truth",
        "out/g.json",
    ],
    "generate-parquet": ["generate", "{in}/small.toml", "-o", "out/g.parquet", "--truth", "out/g.json"],
    "ingest": ["ingest", "{in}/in.txt", "-o", "out/i.parquet", "-q"],
    "analyze": [
        "analyze",
        "{in}/in.txt",
        "{in}/in-vm0.txt",
        "{in}/in-vm1.txt",
        "--json",
        "out/a.json",
        "--out-dir",
        "out/tabs",
        "--report",
        "out/r.html",
        "-q",
    ],
    "report": [
        "report",
        "{in}/a.parquet",
        "-o",
        "out/p.html",
        "--figures",
        "out/fig",
        "--figure-format",
        "svg",
    ],
    "compare": ["compare", "{in}/a.parquet", "{in}/b.parquet", "-o", "out/c.html"],
    "experiment": [
        "experiment",
        "{in}/small.toml",
        "-r",
        "1",
        "-o",
        "out/exp",
        "--report",
        "out/e.html",
        "-q",
    ],
}


def _args(name: str, inputs: Path, *extra: str) -> list[str]:
    return [a.replace("{in}", str(inputs)) for a in COMMANDS[name]] + list(extra)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Small simulated traces: ftrace text (host + guests + vCPU map) and two Parquet runs."""
    d = tmp_path_factory.mktemp("inputs")
    for seed, name in ((1, "small"), (2, "small2")):
        (d / f"{name}.toml").write_text(SMALL_SCENARIO.format(seed=seed))
    done = run_all(
        [
            ["generate", "small.toml", "-o", "in.txt", "--format", "ftrace", "-q"],
            ["generate", "small2.toml", "-o", "in2.txt", "--format", "ftrace", "-q"],
            ["generate", "small.toml", "-o", "a.parquet", "-q"],
            ["generate", "small2.toml", "-o", "b.parquet", "-q"],
        ],
        d,
    )
    for r in done:
        assert r.rc == 0, str(r)
    return d


@pytest.fixture(scope="module")
def references(inputs, tmp_path_factory) -> dict[str, tuple[dict[str, bytes], float]]:
    """Each command run undisturbed (its out/ folder missing: created): its files and wall time."""
    root = tmp_path_factory.mktemp("ref")
    procs = {}
    for name in COMMANDS:
        (root / name).mkdir()
        procs[name] = (start(_args(name, inputs), root / name), time.monotonic())
    refs = {}
    for name, (proc, t0) in procs.items():
        done = finish(proc)
        assert done.rc == 0, str(done)
        files = files_under(root / name / "out")
        assert files and not temp_leftovers(root / name), name
        refs[name] = (files, time.monotonic() - t0)
    return refs


def comparable(files: dict[str, bytes]) -> dict[str, bytes]:
    """Files as compared with the undisturbed run: pages and SVG charts by whether they are whole (the
    convoy-cause chart data comes in varying row order), everything else byte for byte."""
    ends = {".html": b"</html>", ".svg": b"</svg>"}
    return {
        k: (b"whole" if v.rstrip().endswith(ends[Path(k).suffix]) else v) if Path(k).suffix in ends else v
        for k, v in files.items()
    }


# -- signals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(COMMANDS))
def test_signal_at_a_random_point_leaves_all_outputs_or_none(name, inputs, references, tmp_path):
    """Ctrl-C, SIGTERM or SIGHUP at a random time: outputs complete and together, or absent / as before."""
    ref, wall = references[name]
    ref = comparable(ref)
    rng = random.Random(f"{SEED}-{name}")
    runs = []
    for k in range(2 * ROUNDS):  # signals rotate over commands and rounds; ROUNDS=3 gives each one all
        sig = SIGNALS[(k + list(COMMANDS).index(name)) % len(SIGNALS)]
        preexisting = k % 2 == 0
        d = tmp_path / f"{k}-{sig.name}"
        d.mkdir()
        if preexisting:  # files already there: --force may replace them, but only with complete ones
            for rel in ref:
                (d / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
                (d / "out" / rel).write_bytes(b"older file " + rel.encode())
        before = files_under(d / "out") if preexisting else {}
        args = _args(name, inputs, *(["--force"] if preexisting else []))
        delay = rng.uniform(0.2, wall * 1.1)
        runs.append((sig, d, before, delay, start(args, d)))
    t0 = time.monotonic()
    for sig, _d, _before, delay, proc in sorted(runs, key=lambda r: r[3]):
        signal_after(proc, sig, max(0.0, delay - (time.monotonic() - t0)))
    for sig, d, before, delay, proc in runs:
        done = finish(proc)
        where = f"{name} {sig.name} after {delay:.2f} s (PVTRACE_FAULT_SEED={SEED})"
        assert_clean_exit(done, (0, 128 + sig, -sig))
        assert not temp_leftovers(d), f"{where}: {temp_leftovers(d)}"
        now = comparable(files_under(d / "out") if (d / "out").exists() else {})
        if done.rc == 0:
            assert now == ref, (
                f"{where}: differ: {sorted(k for k in ref.keys() | now.keys() if ref.get(k) != now.get(k))}"
            )
        else:
            assert now in (ref, before), f"{where}: {sorted(now)} is neither all outputs nor the files before"


LATE_SIGNAL = """\
import atexit, os, signal, sys, time
atexit.register(lambda: (os.kill(os.getpid(), signal.{sig}), time.sleep(5)))
sys.argv = ["pvtrace", *sys.argv[1:]]
from pvtrace.cli import main
main()
"""


def _signals_by_default() -> None:
    # A CI job in the background (or under nohup) starts us with SIGINT or SIGHUP ignored, and
    # pvtrace keeps a signal its caller ignores ignored: the test needs them delivered.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signal_while_python_exits_ends_quietly(sig, inputs, references, tmp_path):
    """A signal after the command finished (here from an exit handler, where CI once caught a
    SIGHUP): exit 128+signal at once, no traceback, the outputs whole, and one line saying so."""
    ref = comparable(references["analyze"][0])
    script = LATE_SIGNAL.format(sig=sig.name)
    proc = subprocess.run(
        [sys.executable, "-c", script, *_args("analyze", inputs)],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_signals_by_default,
    )
    done = Done(_args("analyze", inputs), proc.returncode, proc.stdout, proc.stderr)
    assert_clean_exit(done, (128 + sig,))
    assert "interrupted after the command finished: its outputs are complete" in done.stderr, str(done)
    assert comparable(files_under(tmp_path / "out")) == ref


# -- a full disk, a read-only folder ------------------------------------------------------------------
def _small_disk(tmp_path: Path):
    """A 256 KiB tmpfs with 4 KiB left (root), or else a 4 KiB file-size limit on the command."""
    mnt = tmp_path / "mnt"
    try:
        ctx = tmpfs(mnt, "256k")
        ctx.__enter__()
    except OSError:
        mnt.mkdir(exist_ok=True)
        (mnt / "keep").write_bytes(b"mine")
        return mnt, None, 4 << 10
    (mnt / "filler").write_bytes(b"\0" * (252 << 10))
    (mnt / "keep").write_bytes(b"mine")
    return mnt, ctx, None


@pytest.mark.parametrize("name", ["generate", "ingest", "analyze", "report", "experiment"])
def test_full_disk_is_one_line_and_leaves_nothing(name, inputs, tmp_path):
    mnt, ctx, fsize = _small_disk(tmp_path)
    try:
        before = files_under(mnt)
        args = [a.replace("out/", "mnt/out/") for a in _args(name, inputs)]
        done = run(args, tmp_path, fsize=fsize)
        assert_one_line_error(done, 1, "cannot write", "mnt/out/")
        assert any(w in done.stderr for w in ("No space left on device", "File too large")), str(done)
        assert files_under(mnt) == before, str(done)
        assert not temp_leftovers(mnt)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)


def test_read_only_folder_fails_before_the_work(inputs, tmp_path):
    ro = tmp_path / "ro"
    try:
        ctx = tmpfs(ro, "64k", readonly=True)
        ctx.__enter__()
    except OSError:
        ro.mkdir()
        ro.chmod(0o555)
        ctx = None
        if os.access(ro, os.W_OK):
            pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        cases = {name: [a.replace("out/", "ro/") for a in _args(name, inputs)] for name in COMMANDS}
        cases["missing-sub"] = [a.replace("out/", "ro/sub/") for a in _args("ingest", inputs)]
        for name, done in zip(cases, run_all(list(cases.values()), tmp_path), strict=True):
            assert_one_line_error(done, 1, "cannot write", "ro/")
            assert "not writable" in done.stderr or "Read-only" in done.stderr, (name, str(done))
        assert files_under(ro) == {}
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
        else:
            ro.chmod(0o755)


# -- outputs that are inputs --------------------------------------------------------------------------
def test_no_command_writes_over_its_inputs(inputs, tmp_path):
    """--force or not, through symlinks and hard links: exit 2, the input byte-equal."""
    for f in (
        "in.txt",
        "in-vm0.txt",
        "in-vm1.txt",
        "in.txt.vcpus.csv",
        "a.parquet",
        "b.parquet",
        "small.toml",
    ):
        shutil.copy(inputs / f, tmp_path / f)
    (tmp_path / "link.txt").symlink_to(tmp_path / "in.txt")
    os.link(tmp_path / "in.txt", tmp_path / "hard.txt")
    before = files_under(tmp_path)
    cases = [
        ["analyze", "in.txt", "--json", "in.txt", "--force", "-q"],
        ["analyze", "in.txt", "--report", "in.txt", "--force", "-q"],
        ["analyze", "in.txt", "--json", "link.txt", "--force", "-q"],
        [
            "analyze",
            "in.txt",
            "--vcpu-map",
            "in.txt.vcpus.csv",
            "--json",
            "in.txt.vcpus.csv",
            "--force",
            "-q",
        ],
        # side files read next to an input without being named (vCPU map, clock offsets)
        ["analyze", "in.txt", "--json", "in.txt.vcpus.csv", "--force", "-q"],
        ["ingest", "in.txt", "-o", "in.txt.vcpus.csv", "--force", "-q"],
        ["report", "in.txt", "-o", "in.txt", "--force"],
        ["report", "in.txt", "-o", "hard.txt", "--force"],
        ["compare", "a.parquet", "b.parquet", "-o", "b.parquet", "--force"],
        ["ingest", "in.txt", "-o", "link.txt", "--force", "-q"],
        ["ingest", "in.txt", "-o", "hard.txt", "--force", "-q"],
        ["generate", "small.toml", "-o", "small.toml", "--force", "-q"],
        ["experiment", "small.toml", "-r", "1", "--report", "small.toml", "--force", "-q"],
    ]
    for done in run_all(cases, tmp_path):
        assert_one_line_error(done, 2, "is also an input")
    dup = run(["generate", "small.toml", "-o", "g.parquet", "--truth", "g.parquet", "-q"], tmp_path)
    assert_one_line_error(dup, 2, "g.parquet would be written twice")
    # --json into --out-dir's own summary.json: the message names the folder's summary, not the same path twice
    dup = run(["analyze", "in.txt", "--out-dir", "d", "--json", "d/summary.json", "-q"], tmp_path)
    assert_one_line_error(dup, 2, "--out-dir d writes summary.json there itself")
    assert files_under(tmp_path) == before


# -- concurrent writers -------------------------------------------------------------------------------
def _events(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def test_concurrent_ingests_to_one_output(inputs, tmp_path):
    """Two ingests of different traces to one file: without --force one wins and the other fails
    cleanly; with --force both finish and the file is one of them whole. Never corrupt, never mixed."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for done in run_all(
        [["ingest", str(inputs / f"in{s}.txt"), "-o", f"ref/{s or 1}.parquet", "-q"] for s in ("", "2")],
        tmp_path,
    ):
        assert done.rc == 0, str(done)
    want = [_events(ref / "1.parquet"), _events(ref / "2.parquet")]
    pairs = []
    for i, force in enumerate((False, False, True)):
        d = tmp_path / f"pair{i}"
        d.mkdir()
        extra = ["--force"] if force else []
        procs = [
            start(["ingest", str(inputs / f"in{s}.txt"), "-o", "out.parquet", "-q", *extra], d)
            for s in ("", "2")
        ]
        pairs.append((d, force, procs))
    for d, force, procs in pairs:
        results = [finish(p) for p in procs]
        for r in results:
            assert_clean_exit(r, (0,) if force else (0, 1))
        if not force:
            assert sorted(r.rc for r in results) == [0, 1], [str(r) for r in results]
            loser = next(r for r in results if r.rc == 1)
            assert_one_line_error(loser, 1, "already exists")
            winner = results.index(next(r for r in results if r.rc == 0))
            assert _events(d / "out.parquet").equals(want[winner])
        else:
            got = _events(d / "out.parquet")
            assert got.equals(want[0]) or got.equals(want[1])
        assert not temp_leftovers(d)
    # started apart: the second never replaces the first without --force
    d = pairs[0][0]
    kept = (d / "out.parquet").read_bytes()
    late = run(["ingest", str(inputs / "in2.txt"), "-o", "out.parquet", "-q"], d)
    assert_one_line_error(late, 1, "already exists")
    assert (d / "out.parquet").read_bytes() == kept
