"""`pvtrace analyze` says how many input lines it skipped and why: on the terminal and in the JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from faults import SMALL_SCENARIO, env, run

from pvtrace.ingest.problems import skipped_lines


def test_analyze_states_skipped_lines(tmp_path):
    (tmp_path / "s.toml").write_text(SMALL_SCENARIO.format(seed=3))
    assert (
        run(["generate", "s.toml", "-o", "t.txt", "--format", "ftrace", "--view", "host", "-q"], tmp_path).rc
        == 0
    )
    lines = (tmp_path / "t.txt").read_text().splitlines(keepends=True)
    lines[40] = "garbage that is no record\n"
    lines[60] = "more garbage\n"
    (tmp_path / "bad.txt").write_text("".join(lines))
    (tmp_path / "bad.txt.vcpus.csv").write_text((tmp_path / "t.txt.vcpus.csv").read_text())
    bad = run(["analyze", "bad.txt", "--json", "bad.json", "-q"], tmp_path)
    good = run(["analyze", "t.txt", "--json", "good.json"], tmp_path)
    assert bad.rc == 0 and good.rc == 0, (str(bad), str(good))
    assert "skipped 2 input lines (2 malformed_line; first: bad.txt:41:" in bad.stderr
    doc = json.loads((tmp_path / "bad.json").read_text())
    assert doc["skipped_lines"]["total"] == 2
    assert doc["skipped_lines"]["by_reason"] == {"malformed_line": 2}
    assert "skipped" not in good.stderr  # nothing to say: "skipped lines: none" came before the summary
    assert json.loads((tmp_path / "good.json").read_text())["skipped_lines"]["total"] == 0
    # shown with the results, after them (stderr merged into stdout, in the order a terminal shows)
    both = subprocess.run(
        [sys.executable, "-m", "pvtrace", "analyze", "bad.txt"],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert both.returncode == 0, both.stdout
    assert both.stdout.startswith("pvtrace analyze bad.txt: level ")
    assert both.stdout.index("Headline") < both.stdout.index("skipped 2 input lines")


def test_first_skipped_line_is_the_earliest_whatever_its_kind():
    problems = {
        "mid.txt": {
            "malformed_line": {"count": 1, "what": "not a record", "samples": [{"line": 539}]},
            "truncated_record": {"count": 2, "what": "cut short", "samples": [{"line": 100}, {"line": 700}]},
        }
    }
    assert skipped_lines(problems)["first"] == "mid.txt:100: cut short"
