"""User text (file names, `file:100:` line references, `START:END`) is printed as written: rich
reads `:100:` as the emoji code for 💯 and `[x]` as markup unless a console is told otherwise."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich._emoji_codes import EMOJI
from typer.testing import CliRunner

from pvtrace.cli.app import COMMANDS, _module_commands, app

GOLDEN = Path(__file__).resolve().parent / "data" / "ingest" / "golden"
runner = CliRunner()


def _text_with_bad_line_100(path: Path) -> Path:
    """A small ftrace text whose line 100 is cut short."""
    lines = (GOLDEN / "ftrace_5flag_header.txt").read_text().splitlines()[:12]
    t = 5021.0
    while len(lines) < 120:
        t += 0.0001
        lines.append(
            f"       CPU 1/KVM-24501   [003] d..1.  {t:.6f}: kvm_entry: vcpu 1, rip 0xffffffff81b3c9a2"
        )
    lines[99] = lines[99][:30]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_line_100_is_printed_verbatim(tmp_path: Path) -> None:
    src = _text_with_bad_line_100(tmp_path / "mid.txt")
    res = runner.invoke(app, ["analyze", str(src), "-q"])
    assert res.exit_code == 0, res.output
    assert "mid.txt:100:" in res.stderr and "💯" not in res.stderr
    res = runner.invoke(app, ["analyze", str(src), "--strict"])
    assert res.exit_code == 1 and "error: " in res.stderr and "mid.txt:100:" in res.stderr


def test_missing_file_is_named_verbatim(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone[1]:100:.txt")
    for argv in (["analyze", gone], ["compare", gone, gone]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 1 and f"{gone}: no such file" in res.stderr, (argv, res.output)


def test_no_help_text_holds_an_emoji_code() -> None:
    # typer renders help through rich markup, emoji codes included: `START:END: trace` showed 🔚
    found = []
    for name in dict.fromkeys(COMMANDS.values()):
        for cmd in _module_commands(name).values():
            texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
            found += [m for t in texts for m in re.findall(r":(\S*?):", t) if m.lower() in EMOJI]
    assert found == []
    res = runner.invoke(app, ["report", "--help"], env={"COLUMNS": "200"})
    assert "START:END" in res.output


def test_a_path_with_brackets_is_that_file_not_a_glob(tmp_path: Path) -> None:
    """polars reads `[1]` in a path as a glob class unless told not to: `t[1].txt` then matches
    nothing (or another file) and the trace silently has 0 events."""
    plain = GOLDEN / "ftrace_5flag_header.txt"
    odd = tmp_path / "t[1].txt"
    odd.write_bytes(plain.read_bytes())
    (tmp_path / "t1.txt").write_text("")  # what the glob would match instead
    counts = []
    for path in (plain, odd):
        res = runner.invoke(
            app, ["analyze", str(path), "-q", "--json", "-", "--out-dir", str(tmp_path / path.stem)]
        )
        assert res.exit_code == 0, res.output
        counts.append(json.loads(res.stdout)["n_events"])
    assert counts[0] > 0 and counts[1] == counts[0]


def test_piped_results_are_not_cut_to_80_columns(tmp_path: Path) -> None:
    # rich wraps at 80 columns when stdout is no terminal: `generate | grep acquisitions` lost
    # the end of its truth line to the next one (every command's results, not only analyze's)
    import subprocess
    import sys

    run = [
        sys.executable,
        "-m",
        "pvtrace",
        "generate",
        "--preset",
        "lhp-demo",
        "-o",
        str(tmp_path / "g.parquet"),
    ]
    done = subprocess.run(
        [*run, "--set", "run.duration_ns=20000000"], capture_output=True, text=True, timeout=120, check=True
    )
    truth = [line for line in done.stdout.splitlines() if line.startswith("acquisitions")]
    assert len(truth) == 1 and len(truth[0]) > 80 and re.search(r"kicks \d+$", truth[0]), done.stdout
