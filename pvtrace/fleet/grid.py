"""Sweep grids: a scenario TOML whose parameters may hold lists or ranges, expanded into cells.

    [sweep]
    preset = "seed-table"        # or scenario = "base.toml": values not in the grid
    seeds = 5                    # N seeds from the base run.seed, or a list of seeds
    analyze = true               # also analyze each run's trace (false: ground truth only)
    view = "full"                # what the analyzer sees: full, host, guest or merged

    [vm]
    count = [1, 2, 3, 4]                                      # a list: one axis
    [lock]
    algorithm = ["ticket", "pv-ticket"]
    spin_threshold_ns = { from = 10_000, to = 40_000, step = 10_000 }   # a range, both ends in

A parameter whose value is itself a list (vm.clock_offsets_ns) is an axis when given a list of
lists. The grid is the cross product of every axis, in file order, times the seeds (innermost).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvtrace import __version__
from pvtrace.errors import ScenarioError, UsageError

SWEEP_KEYS = ("preset", "scenario", "seeds", "analyze", "view")
VIEWS = ("full", "host", "guest", "merged")


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its index in grid order, parameter values, seed and scenario."""

    index: int
    params: dict[str, Any]  # "section.key" -> value
    seed: int
    scenario: Any  # pvtrace.simulate.scenario.Scenario
    cell_id: str


@dataclass
class Grid:
    """A base scenario, the axes over it, the seeds and what to measure in each cell."""

    base: Any
    axes: dict[str, list[Any]]
    seeds: list[int]
    analyze: bool = True
    view: str = "full"
    source: str = ""  # the grid file, named by errors in its cells

    @property
    def n_cells(self) -> int:
        n = len(self.seeds)
        for values in self.axes.values():
            n *= len(values)
        return n

    def cells(self) -> list[Cell]:
        """Every cell, validated here (on the client) so a bad value stops the sweep before it runs."""
        names = list(self.axes)
        out = []
        for combo in itertools.product(*self.axes.values()):
            params = dict(zip(names, combo, strict=True))
            changes: dict[str, dict[str, Any]] = {}
            for name, value in params.items():
                section, key = name.split(".", 1)
                changes.setdefault(section, {})[key] = value
            try:
                scenario = self.base.replace(**changes) if changes else self.base
            except ScenarioError as exc:
                where = f"{self.source}: " if self.source else ""
                raise ScenarioError(f"{where}grid cell {params}: {exc}") from None
            for seed in self.seeds:
                out.append(Cell(len(out), params, seed, scenario, self.cell_id(scenario, seed)))
        return out

    def cell_id(self, scenario: Any, seed: int) -> str:
        doc = {
            "version": __version__,
            "scenario": scenario.to_dict(),
            "seed": seed,
            "analyze": self.analyze,
            "view": self.view,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _range(name: str, spec: dict[str, Any]) -> list[Any]:
    if set(spec) - {"from", "to", "step"} or not {"from", "to"} <= set(spec):
        raise UsageError(f"{name}: a range is {{ from = A, to = B, step = C }}, not {spec!r}")
    start, stop, step = spec["from"], spec["to"], spec.get("step", 1)
    if (
        not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, stop, step))
        or step <= 0
    ):
        raise UsageError(f"{name}: range bounds must be numbers and step > 0, not {spec!r}")
    values, i = [], 0
    while (v := start + i * step) <= stop + (1e-9 * abs(step) if isinstance(step, float) else 0):
        values.append(v)
        i += 1
    if not values:
        raise UsageError(f"{name}: the range {spec!r} is empty")
    return values


def grid_from_dict(raw: dict[str, Any], source: str, base_dir: Path, base: Any = None) -> Grid:
    """Build a Grid from parsed TOML; the base scenario comes from [sweep] (or `base`)."""
    from pvtrace.simulate.scenario import Scenario, load_preset, load_scenario

    sweep = dict(raw.pop("sweep", {}))
    unknown = set(sweep) - set(SWEEP_KEYS)
    if unknown:
        raise UsageError(f"{source}: unknown [sweep] keys {sorted(unknown)} (known: {', '.join(SWEEP_KEYS)})")
    if base is None:
        if "preset" in sweep and "scenario" in sweep:
            raise UsageError(f"{source}: [sweep] takes preset or scenario, not both")
        if "preset" in sweep:
            base = load_preset(sweep["preset"])
        elif "scenario" in sweep:
            base = load_scenario(base_dir / sweep["scenario"])
        else:
            base = Scenario()
    defaults = base.to_dict()
    fixed: dict[str, dict[str, Any]] = {}
    axes: dict[str, list[Any]] = {}
    for section, values in raw.items():
        if section == "description":
            continue
        if not isinstance(values, dict) or section not in defaults or not isinstance(defaults[section], dict):
            known = ", ".join(f"[{s}]" for s, v in defaults.items() if isinstance(v, dict))
            raise UsageError(f"{source}: unknown scenario section [{section}] (known: {known})")
        for key, value in values.items():
            name = f"{section}.{key}"
            listy = isinstance(defaults[section].get(key), list)
            if isinstance(value, dict):
                axes[name] = _range(f"{source}: {name}", value)
            elif isinstance(value, list) and (not listy or (value and isinstance(value[0], list))):
                if not value:
                    raise UsageError(f"{source}: {name} is an empty list: give at least one value")
                axes[name] = value
            else:
                fixed.setdefault(section, {})[key] = value
    try:
        base = base.replace(**fixed) if fixed else base
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    seeds_raw = sweep.get("seeds", 1)
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = [base.run.seed + r for r in range(seeds_raw)]
    elif isinstance(seeds_raw, list) and seeds_raw and all(isinstance(s, int) for s in seeds_raw):
        seeds = list(seeds_raw)
    else:
        raise UsageError(f"{source}: [sweep] seeds is a count >= 1 or a list of seeds, not {seeds_raw!r}")
    view = sweep.get("view", "full")
    if view not in VIEWS:
        raise UsageError(f"{source}: [sweep] view must be one of {', '.join(VIEWS)}, not {view!r}")
    return Grid(
        base=base, axes=axes, seeds=seeds, analyze=bool(sweep.get("analyze", True)), view=view, source=source
    )


def load_grid(path: Path) -> Grid:
    """Read GRID.toml; errors name the file and the key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the grid ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    return grid_from_dict(raw, str(path), path.parent)
