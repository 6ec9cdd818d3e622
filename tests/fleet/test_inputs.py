"""What `pvtrace fleet analyze` takes as traces: folders, globs, manifests, and stable ids."""

from __future__ import annotations

import os

import pytest

from pvtrace.errors import UsageError
from pvtrace.fleet.inputs import expand_inputs, split_captures

OPTIONS = {"format": "auto", "lock_kind": None, "strict": False}


def test_folders_globs_and_manifests(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "x.txt.vcpus.csv").write_text("tid,pid,vm,vcpu\n")
    (tmp_path / "a" / ".hidden").write_text("h")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "y.dat").write_text("y")
    (tmp_path / "a" / "old-fleet").mkdir()
    (tmp_path / "a" / "old-fleet" / "fleet.json").write_text("{}")
    (tmp_path / "a" / "old-fleet" / "part.parquet").write_text("p")
    (tmp_path / "m.csv").write_text("path,trace,host\na/x.txt,cap,h1\na/sub/y.dat,cap,h1\n")
    folder = expand_inputs([str(tmp_path / "a")], OPTIONS)
    assert [t.name for t in folder] == ["sub/y.dat", "x.txt"]
    globbed = expand_inputs([str(tmp_path / "a" / "**" / "*.dat")], OPTIONS)
    assert [t.name for t in globbed] == ["y.dat"] and globbed[0].trace_id == folder[0].trace_id
    (cap,) = expand_inputs([str(tmp_path / "m.csv")], OPTIONS)
    assert cap.name == "cap" and cap.labels == {"host": "h1"} and len(cap.files) == 2
    # the same file named twice is one trace
    assert len(expand_inputs([str(tmp_path / "a" / "x.txt"), str(tmp_path / "a")], OPTIONS)) == 2


def test_the_id_follows_the_files_options_and_labels(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abc")
    (first,) = expand_inputs([str(f)], OPTIONS)
    assert expand_inputs([str(f)], OPTIONS)[0].trace_id == first.trace_id
    assert expand_inputs([str(f)], {**OPTIONS, "lock_kind": "fifo"})[0].trace_id != first.trace_id
    (tmp_path / "t.txt.vcpus.csv").write_text("tid,pid,vm,vcpu\n")  # a side file ingest will read
    assert expand_inputs([str(f)], OPTIONS)[0].trace_id != first.trace_id
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    (touched,) = expand_inputs([str(f)], OPTIONS)
    f.write_text("abcd")
    assert len({first.trace_id, touched.trace_id, expand_inputs([str(f)], OPTIONS)[0].trace_id}) == 3


def test_a_manifest_naming_a_missing_file(tmp_path):
    (tmp_path / "m.csv").write_text("path,host\nnope.txt,h\n")
    with pytest.raises(UsageError, match="no such file"):
        expand_inputs([str(tmp_path / "m.csv")], OPTIONS)


def test_a_host_trace_and_its_guests_given_as_files_are_named_as_one_capture(tmp_path):
    """A folder holding h.txt, h-vm0.txt and h-vm1.txt (as generate and trace-cmd -A write them) is
    three traces to a fleet, none of which joins waits with vCPU states: the plan warns of them."""
    for name in ("h.txt", "h-vm0.txt", "h-vm1.txt", "other.txt", "lhp-demo.txt"):
        (tmp_path / name).write_text("x")
    traces = expand_inputs([str(tmp_path)], {})
    assert split_captures(traces) == [["h.txt", "h-vm0.txt", "h-vm1.txt"]]
