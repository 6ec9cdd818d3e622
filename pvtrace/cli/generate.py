"""CLI for the simulate stage: `pvtrace generate` and `pvtrace experiment`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from pvtrace.cli.common import handle_errors, out, progress
from pvtrace.errors import UsageError
from pvtrace.fmt import fmt_ns, plural
from pvtrace.ingest.offsets_file import OFFSETS_SUFFIX, GivenClock, read_offsets
from pvtrace.outputs import OutputSet
from pvtrace.simulate.scenario import Scenario, load_preset, load_scenario, preset_names
from pvtrace.simulate.truth import GroundTruth

FORMATS = ("parquet", "ftrace", "trace-cmd", "perf")
VIEWS = ("full", "host", "guest", "merged")


def pick_scenario(scenario: Path | None, preset: str | None) -> Scenario:
    """The scenario file, or a preset, or the defaults."""
    if scenario is not None and preset is not None:
        raise UsageError("give a scenario file or --preset, not both")
    if scenario is not None:
        return load_scenario(scenario)
    if preset is not None:
        return load_preset(preset)
    return Scenario()


def apply_overrides(s: Scenario, lock: str | None, sets: list[str] | None) -> Scenario:
    """--lock NAME and --set section.key=value (value in TOML syntax; bare words are strings)."""
    import tomllib

    changes: dict[str, dict] = {}
    if lock is not None:
        changes.setdefault("lock", {})["algorithm"] = lock
    for item in sets or []:
        name, eq, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not eq or not dot or not section or not key:
            raise UsageError(f"--set {item!r}: expected section.key=value, e.g. hypervisor.ple=false")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        changes.setdefault(section, {})[key] = value
    return s.replace(**changes) if changes else s


def print_truth(truth: GroundTruth, n_events: int, files: list[Path], seen: tuple[str, int] | None) -> None:
    """A short account of the run: where it went, how long each VM took, what went wrong. `seen`:
    (view, events in it) when the output is not the full run (analyze counts a third of the
    events `generate` did, and nothing said why)."""
    t = truth.summary.totals
    view = f", {seen[1]:,} of them in the {seen[0]} view a tracer sees" if seen else ""
    out.print(
        f"[bold]Simulated {truth.t_end / 1e9:.3f} s[/]: {n_events:,} events{view} -> "
        + escape(", ".join(str(f) for f in files))
    )
    table = Table(show_edge=False, title_justify="left")
    table.add_column("vm")
    table.add_column("completion", justify="right")
    table.add_column("ops", justify="right")
    for vm, done in truth.completion_ns.items():
        table.add_row(escape(vm), "-" if done is None else fmt_ns(done), f"{truth.ops_done[vm]:,}")
    out.print(table)
    if None in truth.completion_ns.values():  # a bare "-" read as a missing number
        out.print(
            "completion -: the VM had not finished its work when the run stopped (run.duration_ns); ops: the lock operations it did by then"
        )
    out.print(
        f"acquisitions {t['n_acquisitions']:,} (contended {t['n_contended']:,}); "
        f"spin {fmt_ns(t['spin_ns'])}: LHP waste {fmt_ns(t['waste_lhp_ns'])}, "
        f"LWP waste {fmt_ns(t['waste_lwp_ns'])}; incidents LHP {t['n_lhp']:,}, LWP {t['n_lwp']:,}; "
        f"convoys {t['n_convoys']:,} (longest {t['convoy_len_max']}); "
        f"PAUSE exits {t['n_pause_exits']:,}; kicks {t['n_kicks']:,}"
    )


def text_window(trace, view: str) -> tuple[int, int] | None:
    """[first, last] host-clock timestamp of the events a text capture of `view` prints."""
    from pvtrace.simulate.views import select_view

    ts = select_view(trace, view).events["ts"]
    return (int(ts.min()), int(ts.max())) if ts.len() else None


def experiment_title(exp) -> str:
    """The founding table's title, a line of its own (a rich title wraps at the table's width): every
    guest of every seed is one sample, so with 1 seed 2-4 guests still have a std-dev."""
    return f"Completion time (s), mean (std-dev) of guests x {plural(exp.repeats, 'seed')}"


def experiment_table(exp) -> Table:
    """The founding table: mean (std-dev) completion in seconds without and with the cure, and the gain."""
    from pvtrace.simulate.experiment import LOCKS

    t = Table(show_edge=False)
    t.add_column("guests", justify="right")
    t.add_column(f"without ({LOCKS[0]})", justify="right")
    t.add_column(f"with ({LOCKS[1]})", justify="right")
    t.add_column("gain", justify="right")

    def cell(mean: float, std: float | None) -> str:
        return f"{mean:.3f} ({'-' if std is None else f'{std:.3f}'})"  # one sample: no std-dev

    for r in exp.table.iter_rows(named=True):
        t.add_row(
            str(r["level"]),
            cell(r["without_mean_s"], r["without_std_s"]),
            cell(r["with_mean_s"], r["with_std_s"]),
            f"{r['gain_pct']:.1f}%",
        )
    return t


TEXT_SUFFIXES = (".txt", ".text", ".log")


def checked_format(fmt: str | None, output: Path) -> str:
    """--format as given (default parquet), refused where -o's name says the other kind of file:
    `generate -o run.txt` wrote Parquet into run.txt without a word."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name = output.name.lower().removesuffix(".gz").removesuffix(".xz").removesuffix(".zst")
    text_name = name.endswith(TEXT_SUFFIXES)
    if fmt is None and text_name:
        raise UsageError(
            f"-o {output} names a text file, but --format is parquet (the default): pass --format "
            "ftrace, trace-cmd or perf for text, or name the file .parquet"
        )
    if fmt not in (None, "parquet") and name.endswith(".parquet"):
        raise UsageError(f"-o {output} names a Parquet file, but --format {fmt} writes text: name it .txt")
    return fmt or "parquet"


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""

    @app.command("generate")
    @handle_errors
    def generate_cmd(
        scenario: Path | None = typer.Argument(None, help="Scenario TOML file (see docs/simulator.md)."),
        preset: str | None = typer.Option(
            None, "--preset", help=f"A bundled scenario: {', '.join(preset_names())}."
        ),
        seed: int | None = typer.Option(
            None, "--seed", help="Random seed (default: the scenario's run.seed)."
        ),
        output: Path = typer.Option(
            ..., "-o", "--out", help="Output file (text formats: the host-side file)."
        ),
        fmt: str | None = typer.Option(
            None, "--format", help="parquet, ftrace, trace-cmd or perf (default: parquet)."
        ),
        view: str | None = typer.Option(
            None,
            "--view",
            help="full, host, guest or merged: what a tracer would see (default: full for parquet, merged for text).",
        ),
        truth_path: Path | None = typer.Option(None, "--truth", help="Also write the ground truth as JSON."),
        lock: str | None = typer.Option(
            None, "--lock", help="Lock algorithm (tas, ticket, pv-ticket, qspinlock, pv-qspinlock, ...)."
        ),
        sets: list[str] | None = typer.Option(
            None,
            "--set",
            help="Change one parameter: section.key=value, e.g. lock.stealing=none (repeatable).",
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no summary."),
    ) -> None:
        """Simulate a host running VMs whose guests take spinlocks; write events and ground truth."""
        from pvtrace.simulate.run import simulate_to_parquet, simulate_trace

        fmt = checked_format(fmt, output)
        if seed is not None and seed < 0:  # as run.seed is checked: numpy takes no negative seed
            raise UsageError(f"--seed must be >= 0, got {seed}")
        if view is None:
            view = "full" if fmt == "parquet" else "merged"
        if view not in VIEWS:
            raise UsageError(f"unknown --view {view!r}; choose one of {', '.join(VIEWS)}")
        s = apply_overrides(pick_scenario(scenario, preset), lock, sets)
        outputs = OutputSet(force=force, inputs=[scenario] if scenario is not None else [])
        outputs.plan(output, new=True)
        if truth_path is not None:
            outputs.plan(truth_path, new=True)
        # the traces and the truth appear together or not at all
        with outputs, progress("simulating", total=1.0, quiet=quiet) as bar:

            def tick(done: float) -> None:
                bar.update(completed=done)

            window, seen = None, None
            if fmt == "parquet" and view == "full":
                run = simulate_to_parquet(s, output, seed=seed, force=force, progress=tick)
                truth, n_events, files = run.truth, run.n_events, [output]
            else:
                from pvtrace.simulate.render import write_rendered
                from pvtrace.simulate.views import select_view

                trace, truth = simulate_trace(s, seed=seed, progress=tick)
                n_events = trace.events.height
                seen = (view, select_view(trace, view).events.height) if view != "full" else None
                files = write_rendered(trace, fmt, view, output, force)
                # the truth's window against the text's: only a written truth is compared with it
                window = text_window(trace, view) if fmt != "parquet" and truth_path is not None else None
                if window is not None:  # what analyzing the text should give: the truth of its window
                    from pvtrace.simulate.truth_window import cut_truth

                    cut = cut_truth(trace, window[0], window[1] + 1)
                    truth.extra["text_window"] = {
                        "t_start": cut.t_start,
                        "t_end": cut.t_end,
                        "totals": cut.totals,
                        "running_ns": cut.running_ns,
                        "wait_ns": cut.wait_ns,
                    }
            if truth_path is not None:
                truth.write_json(truth_path, force=force)
                files.append(truth_path)
        if not quiet:
            print_truth(truth, n_events, files, seen)
            if window is not None:
                out.print(
                    f"the text covers host time [{window[0]}, {window[1]}] ns (its first and last event), "
                    f"the truth [0, {truth.t_end}) ns; {truth_path.name}'s text_window holds the truth of the "
                    "text's window, which analyzing the text should give",
                    highlight=False,
                )
            offsets_file = next((f for f in files if f.name.endswith(OFFSETS_SUFFIX)), None)
            if offsets_file is not None:
                offsets = read_offsets(offsets_file)
                out.print(
                    "guest clock offsets (host = guest + offset; analyze and ingest read them from "
                    f"{offsets_file.name}): "
                    + ", ".join(
                        f"{vm} {int(v)} ns"
                        + (f" drifting {v.drift_ppm:+.3f} ppm" if isinstance(v, GivenClock) else "")
                        for vm, v in offsets.items()
                    ),
                    highlight=False,
                )

    @app.command("experiment")
    @handle_errors
    def experiment_cmd(
        scenario: Path | None = typer.Argument(
            None, help="Scenario TOML file (default: --preset seed-table)."
        ),
        preset: str | None = typer.Option(None, "--preset", help="A bundled scenario (default seed-table)."),
        repeats: int = typer.Option(5, "--repeats", "-r", min=1, help="Seeds per (guests, lock) cell."),
        output: Path | None = typer.Option(
            None, "-o", "--out", help="Folder for experiment.csv, experiment-runs.csv and experiment.json."
        ),
        report: Path | None = typer.Option(
            None, "--report", help="Also write an HTML page: the table and completion time against guests."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar."),
    ) -> None:
        """The founding experiment: 1-4 guests x {ticket, pv-ticket}, mean (std-dev) completion and gain."""
        from pvtrace.simulate.experiment import LEVELS, LOCKS, run_experiment

        s = pick_scenario(scenario, preset if (preset or scenario) else "seed-table")
        outputs = OutputSet(force=force, inputs=[scenario] if scenario is not None else [])
        if output is not None:
            for name in ("experiment.csv", "experiment-runs.csv", "experiment.json"):
                outputs.plan(output / name, new=True)
        if report is not None:
            outputs.plan(report, new=True)
        total = len(LEVELS) * len(LOCKS) * repeats
        files: list[Path] = []
        with outputs:  # tables, JSON and page together or not at all
            with progress("experiment", total=total, quiet=quiet) as bar:
                exp = run_experiment(
                    s, repeats=repeats, progress=lambda done, _total: bar.update(completed=done)
                )
            if output is not None:
                files += exp.write(output, force=force)
            if report is not None:
                from pvtrace.report import write_experiment_report

                files.append(write_experiment_report(exp.report_rows(), report, force=force))
        out.print(experiment_title(exp), highlight=False, soft_wrap=True)
        out.print(experiment_table(exp))
        if files:
            out.print("Wrote " + ", ".join(str(f) for f in files), markup=False)
