"""The Dask dashboard's address is printed when asked (--dashboard), not on every fleet or sweep run
(it was, with how to install bokeh, which the dashboard's own page says)."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pvtrace.cli import fleet as cli_fleet
from pvtrace.cli.app import app
from pvtrace.fleet import cluster

LINK = "http://127.0.0.1:8787/status"


@pytest.fixture
def fake_cluster(monkeypatch):
    @contextmanager
    def open_client(scheduler, workers):
        yield SimpleNamespace(dashboard_link=LINK)

    monkeypatch.setattr(cluster, "open_client", open_client)


@pytest.mark.parametrize("asked", [False, True])
def test_dashboard_address_only_when_asked(fake_cluster, capsys, asked):
    done = cli_fleet.run_on_cluster(
        "traces", lambda: None, None, 1, quiet=False, dashboard=asked, run=lambda client, tick: "ran"
    )
    assert done == "ran"
    stderr = capsys.readouterr().err
    assert (LINK in stderr) is asked


@pytest.mark.parametrize("command", [["fleet", "analyze"], ["sweep", "run"]])
def test_both_cluster_commands_offer_it(command):
    res = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--dashboard" in res.output
