"""CLI: `pvtrace calibrate`, the published calibration targets (docs/simulator.md) against the default model."""

from __future__ import annotations

import typer
from rich.table import Table

from pvtrace.cli.common import handle_errors, out, print_titled, progress
from pvtrace.fmt import fmt_2dp


def checks_table(checks) -> Table:
    t = Table(title="Calibration targets (KVM defaults, PLE on)", title_justify="left", show_edge=False)
    for name, justify in (("target", "left"), ("figure", "left"), ("published", "left")):
        t.add_column(name, justify=justify)
    for name in ("simulated", "ratio", "result"):
        t.add_column(name, justify="right")
    for c in checks:
        t.add_row(
            c.target,
            c.figure,
            c.published,
            fmt_2dp(c.simulated),
            fmt_2dp(c.ratio),
            "pass" if c.passed else "MISS",
        )
    return t


def scaling_table(curve) -> Table:
    t = Table(
        title="One VM grown past an 8-pCPU host, same total work: slowdown vs 8 vCPUs",
        title_justify="left",
        show_edge=False,
    )
    t.add_column("lock")
    for oc in (1.0, 1.5, 2.0):
        t.add_column(f"{oc:g}x", justify="right")
    for lock in curve["lock"].unique(maintain_order=True):
        rows = curve.filter(curve["lock"] == lock).sort("vcpus")
        t.add_row(lock, *(f"{x:.2f}" for x in rows["slowdown"]))
    return t


def register(app: typer.Typer) -> None:
    """Add the command to the app."""

    @app.command("calibrate")
    @handle_errors
    def calibrate_cmd(
        repeats: int = typer.Option(3, "--repeats", "-r", min=1, help="Seeds per experiment cell."),
        scaling: bool = typer.Option(True, "--scaling/--no-scaling", help="Also the one-VM scaling curve."),
    ) -> None:
        """Run every calibration target (published figures: docs/simulator.md) with the default model; published vs simulated."""
        from pvtrace.simulate.calibrate import ALGORITHMS, SCALING_VCPUS, check_groups, checks, scaling_curve

        # a minute of simulation on two cores: a bar says it is working (it was silent throughout)
        with progress("calibration targets", total=len(check_groups(repeats))) as bar:
            found = checks(repeats=repeats, progress=lambda _target: bar.advance())
        print_titled(out, checks_table(found))
        if misses := sum(not c.passed for c in found):  # a bare MISS read as a broken model
            out.print(
                f"{misses} MISS: simulated outside the published band; docs/simulator.md (Calibration, "
                '"The misses") says which mechanisms the model lacks for them.',
                highlight=False,
                soft_wrap=True,
            )
        if scaling:
            with progress("scaling curve", total=len(ALGORITHMS) * len(SCALING_VCPUS)) as bar:
                curve = scaling_curve(progress=bar.advance)
            print_titled(out, scaling_table(curve))
