"""A signal that comes while an output's temporary file is being created leaves nothing behind: the
file is noted for removal before the signal is taken (pvtrace.outputs, OutputSet.stage)."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from pvtrace.outputs import OutputSet, Terminated, remove_live_temps, signals_unwind


def test_a_signal_as_a_temporary_file_is_created_leaves_no_file(tmp_path, monkeypatch):
    # CI: SIGHUP 1.4 s into `generate` left `.g.parquet.*.partial` (created, not yet noted)
    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_signal(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGHUP)  # as the file exists, before pvtrace has noted it
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_signal)
    with signals_unwind(), pytest.raises(Terminated):
        OutputSet().stage(tmp_path / "out.parquet")
    remove_live_temps()  # what the command does as it unwinds
    assert list(tmp_path.iterdir()) == []
