"""Charts as image files (PNG or SVG) through vl-convert, for papers and slides."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import vl_convert

from pvtrace.errors import UsageError
from pvtrace.outputs import OutputSet, atomic_file, current
from pvtrace.report.figure import Figure
from pvtrace.report.page import vl_version
from pvtrace.trace import check_writable

FORMATS = ("png", "svg")


def export_figures(
    figures: Iterable[Figure], directory: Path | str, fmt: str = "png", force: bool = False
) -> list[Path]:
    """Write each figure that has a chart as <directory>/<name>.<fmt>; returns the files written.

    Every target is checked before anything is written, so a refused overwrite
    leaves the directory untouched; the images appear together or not at all.
    """
    if fmt not in FORMATS:
        raise UsageError(f"figure format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--figures {directory}: exists and is not a directory")
    charts = [f for f in figures if f.chart is not None]
    targets = [directory / f"{f.name}.{fmt}" for f in charts]
    for path in targets:
        check_writable(path, force)
    with OutputSet(force=force) if current() is None else contextlib.nullcontext():
        for fig, path in zip(charts, targets, strict=True):
            spec = fig.spec()
            with atomic_file(path, force) as tmp:
                if fmt == "png":
                    tmp.write_bytes(vl_convert.vegalite_to_png(spec, vl_version=vl_version(), scale=2))
                else:
                    tmp.write_text(
                        vl_convert.vegalite_to_svg(spec, vl_version=vl_version()), encoding="utf-8"
                    )
    return targets
