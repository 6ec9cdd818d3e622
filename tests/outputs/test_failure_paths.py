"""What a command says and leaves behind when it fails or is stopped (pvtrace.outputs and
cli.common.handle_errors): the OS's words for a full disk, no folder left by a failed command, a
full disk found before the work, a signal that a library turned into another exception, and a
signal after the outputs were written."""

from __future__ import annotations

import os
import signal

import polars as pl
import pytest
import typer

from pvtrace import outputs
from pvtrace.cli.common import handle_errors
from pvtrace.outputs import OutputError, OutputSet, atomic_file, os_message


@pytest.fixture
def signals_delivered():
    """Under nohup (or a CI job that ignores them) pvtrace keeps SIGHUP and SIGINT ignored, as it
    should: these tests need them delivered."""
    before = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGHUP, signal.SIGINT)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize(
    "exc",
    [
        # `analyze --out-dir` on a full tmpfs (polars' parquet writer)
        pl.exceptions.ComputeError(
            "parquet: File out of specification: underlying IO error: No space left on device (os error 28)"
        ),
        # `generate -o` on a full tmpfs (its Arrow writer)
        OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device"),
    ],
)
def test_a_library_error_wrapping_an_os_error_says_the_os_words(exc):
    assert os_message(exc) == os.strerror(28)


def test_an_aborted_command_leaves_no_folder_it_created(tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError), OutputSet() as out:
        out.stage(tmp_path / "tables" / "sub" / "waits.parquet").finish()
        out.stage(tmp_path / "mine" / "new" / "a.json").finish()
        raise RuntimeError("disk full half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert list((tmp_path / "mine").iterdir()) == []


def test_a_lone_writer_that_fails_leaves_no_folder_it_created(tmp_path):
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "pages" / "p.html") as tmp:
        tmp.write_text("<html>")
        raise RuntimeError("the page failed half-way")
    assert list(tmp_path.iterdir()) == []


def test_a_committed_command_keeps_the_folders_it_created(tmp_path):
    with OutputSet() as out, atomic_file(tmp_path / "tables" / "a.json") as tmp:
        assert out is outputs.current()
        tmp.write_text("{}")
    assert (tmp_path / "tables" / "a.json").read_text() == "{}"


def test_a_full_disk_fails_before_the_work(tmp_path, monkeypatch):
    real = os.statvfs(tmp_path)
    full = os.statvfs_result((*real[:3], 0, 0, *real[5:]))  # f_bfree, f_bavail
    monkeypatch.setattr(outputs.os, "statvfs", lambda path: full)
    with pytest.raises(OutputError, match=r"cannot write .*out\.json: No space left on device"):
        OutputSet().plan(tmp_path / "out.json")


def test_a_folder_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    """A parent that passes the checks but refuses the folder (/proc, a read-only bind mount as root)."""
    made = []

    def refuse(self, *args, **kwargs):
        made.append(self)
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(outputs.Path, "mkdir", refuse)
    why = r"out\.json: cannot create the folder .*/new: No such file or directory"
    with pytest.raises(OutputError, match=why), OutputSet() as out:
        out.stage(tmp_path / "new" / "out.json")
    assert made == [tmp_path / "new"] and not (tmp_path / "new").exists()


def _run(command) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as stop:
        handle_errors(command)()
    return stop.value.exit_code


def test_a_signal_a_library_turned_into_another_error_is_an_interruption(signals_delivered, capsys):
    """CI-like run: SIGHUP 1.5 s into `analyze` came out of polars as `TypeError: '<unprintable str
    object>' is not a Polars data type` with a traceback and exit 1."""

    def command():
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        except KeyboardInterrupt:  # what polars does with an exception raised in its callback
            raise TypeError("'<unprintable str object>' is not a Polars data type") from None

    assert _run(command) == 128 + signal.SIGHUP
    assert capsys.readouterr().err.strip() == "interrupted (SIGHUP)"


def test_a_signal_a_library_swallowed_is_an_interruption_without_a_traceback(signals_delivered, capsys):
    """A signal raised inside a library's callback where it cannot propagate: Python printed
    'Exception ignored in: DataTypeClass' and a traceback on stderr (the fault-injection test saw
    it), and the command went on. Now nothing is printed for it, and the command ends interrupted."""
    import sys

    def command():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt as exc:  # as a C callback does: reported unraisable, not raised
            sys.unraisablehook(
                type(
                    "Unraisable",
                    (),
                    {
                        "exc_type": type(exc),
                        "exc_value": exc,
                        "exc_traceback": None,
                        "err_msg": "Exception ignored in",
                        "object": "DataTypeClass",
                    },
                )()
            )
        return None

    assert _run(command) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_signal_after_the_outputs_were_placed_says_they_are_complete(signals_delivered, tmp_path, capsys):
    """SIGTERM while `ingest` printed its summary: its output was whole, yet the line said only
    'interrupted (SIGTERM)'."""

    def command():
        with OutputSet(), atomic_file(tmp_path / "ev.parquet") as tmp:
            tmp.write_bytes(b"PAR1")
        os.kill(os.getpid(), signal.SIGTERM)

    assert _run(command) == 128 + signal.SIGTERM
    said = capsys.readouterr().err.strip()
    assert said == f"interrupted (SIGTERM); written before it and complete: {tmp_path / 'ev.parquet'}"
    assert (tmp_path / "ev.parquet").read_bytes() == b"PAR1"


def test_ctrl_c_before_any_output_is_written_says_interrupted(signals_delivered, tmp_path, capsys):
    def command():
        with OutputSet(), atomic_file(tmp_path / "ev.parquet") as tmp:
            tmp.write_bytes(b"PAR1")
            os.kill(os.getpid(), signal.SIGINT)

    assert _run(command) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert list(tmp_path.iterdir()) == []
