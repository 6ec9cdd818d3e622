"""Traces named by fsspec URLs: `file://` URLs mean the local files, and a `memory://` store (one
process: an in-process Dask cluster) gives the results of the same files read locally."""

from __future__ import annotations

import json

import fsspec
import polars as pl
import pytest
from typer.testing import CliRunner

from pvtrace.cli.app import app
from pvtrace.errors import UsageError
from pvtrace.fleet import store
from pvtrace.fleet.inputs import expand_inputs
from pvtrace.fleet.run import run_fleet

OPTIONS = {"format": "auto", "lock_kind": None, "strict": False}


def test_file_urls_are_the_local_files(trace_dir, capture, tmp_path):
    manifest, _ = capture
    for plain in ([str(trace_dir)], [str(manifest)], [str(trace_dir / "*.parquet")]):
        url = ["file://" + plain[0]]
        assert [(t.name, t.files, t.trace_id) for t in expand_inputs(url, OPTIONS)] == [
            (t.name, t.files, t.trace_id) for t in expand_inputs(plain, OPTIONS)
        ]
    fleet = tmp_path / "fleet"
    res = CliRunner().invoke(
        app,
        ["fleet", "analyze", f"file://{trace_dir}/seed.parquet", "-o", str(fleet), "--workers", "1", "-q"],
    )
    assert res.exit_code == 0, res.output
    assert store.read(fleet, "trace")["files"].to_list() == [[str(trace_dir / "seed.parquet")]]


def _summary(row: dict) -> dict:
    doc = json.loads(row["summary_json"])
    doc.get("clock", {}).pop("offsets_file", None)  # where the worker's copy of the side file was
    return doc


@pytest.fixture
def memory_store(trace_dir, capture):
    """The capture (ftrace host + guests, side files) and a Parquet trace in a memory:// store, with
    a manifest using relative paths and one absolute URL."""
    manifest, _ = capture
    fs = fsspec.filesystem("memory")
    for f in manifest.parent.iterdir():
        if f.name != manifest.name:
            fs.pipe(f"/fleet-in/cap/{f.name}", f.read_bytes())
    fs.pipe("/fleet-in/seed.parquet", (trace_dir / "seed.parquet").read_bytes())
    rows = manifest.read_text().splitlines()
    text = "\n".join(
        [rows[0], *(f"cap/{r}" for r in rows[1:]), "memory://fleet-in/seed.parquet,seed,hostB,6.1"]
    )
    fs.pipe("/fleet-in/manifest.csv", (text + "\n").encode())
    yield "memory://fleet-in"
    fs.rm("/fleet-in", recursive=True)


def test_a_memory_store_gives_the_results_of_the_local_files(memory_store, trace_dir, capture, tmp_path):
    from distributed import Client

    manifest, capture_files = capture
    remote = expand_inputs([f"{memory_store}/manifest.csv"], OPTIONS)
    assert [t.name for t in remote] == ["cap1", "seed"]
    assert all(f.startswith("memory://") for t in remote for f in t.files)
    local = expand_inputs([str(manifest), str(trace_dir / "seed.parquet")], OPTIONS)
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        for traces, out in ((remote, tmp_path / "remote"), (local, tmp_path / "local")):
            tally = run_fleet(client, traces, out, options=OPTIONS, worst=5)
            assert tally.done == 2 and not tally.failed, tally.failed
    got = store.read(tmp_path / "remote", "trace").sort("trace")
    want = store.read(tmp_path / "local", "trace").sort("n_events")
    for r, w in zip(got.sort("n_events").iter_rows(named=True), want.iter_rows(named=True), strict=True):
        assert _summary(r) == _summary(w)
    cap = got.filter(pl.col("trace") == "cap1").row(0, named=True)
    assert cap["label_host"] == "hostA" and len(cap["files"]) == len(capture_files)
    # a second listing of the unchanged store has the same ids: a rerun does no work
    assert [t.trace_id for t in expand_inputs([f"{memory_store}/manifest.csv"], OPTIONS)] == [
        t.trace_id for t in remote
    ]
    # every file of the folder but the manifest (a side file), one trace each
    assert sorted(t.name for t in expand_inputs([memory_store], OPTIONS)) == sorted(
        [f.name for f in capture_files] + ["seed.parquet"]
    )


def test_a_missing_url_is_a_one_line_error():
    with pytest.raises(UsageError, match="no such file"):
        expand_inputs(["memory://nowhere/t.txt"], OPTIONS)
    with pytest.raises(UsageError, match="matches no file"):
        expand_inputs(["memory://nowhere/*.txt"], OPTIONS)
