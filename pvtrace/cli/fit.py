"""Tables fitted to the terminal: a wide text column wraps, and while a table is still too wide
the columns least needed are left out and named, so that rich never cuts a number to '…' (at 80
columns it blanked the analyze summary's incident kind and waste, and compare's metric names).
A table that does not fit even so is printed a row per line, every column named in it: at 40
columns rich squeezed the wrapping columns (headline labels, incident times) to nothing and cut
the numbers left to '2…'."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# A wrapping column (a label, a time with its guest clock) counts this wide when a table is fitted.
WRAP_MIN = 24
# ... and may be squeezed to this, narrower lines of it still reading as words, before the table
# gives way to a row per line.
WRAP_FLOOR = 12


def fit(
    t: Table, width: int, drop: tuple[tuple[str, ...], ...], wrap: tuple[str, ...]
) -> tuple[Table | None, list[str], int]:
    """The table narrowed to `width` columns: the `wrap` columns may wrap, and while it is still
    too wide the `drop` groups of columns are left out, least needed first. Returns the table
    (None: it cannot fit, print it a row per line), the columns left out and the width that shows
    them all."""

    def natural(c) -> int:
        return max(cell_len(str(c.header)), *(Text.from_markup(str(x)).cell_len for x in c.cells))

    def needed(cols: list, squeeze: int | None) -> int:
        sizes = [min(natural(c), squeeze) if squeeze and c.header in wrap else natural(c) for c in cols]
        return sum(sizes) + 3 * len(cols) + 1  # padding of 1 each side, a border between and around

    cols = list(t.columns)
    full = needed(cols, squeeze=None)
    left_out: list[str] = []
    for group in drop:
        if needed(cols, squeeze=WRAP_MIN) <= width:
            break
        left_out += [c.header for c in cols if c.header in group]
        cols = [c for c in cols if c.header not in group]
    if needed(cols, squeeze=WRAP_FLOOR) > width:
        return None, [], full
    for c in cols:
        if c.header in wrap:
            c.no_wrap, c.overflow = False, "fold"
    if not left_out:
        return t, [], full
    fitted = Table(header_style=t.header_style, title=t.title, title_justify=t.title_justify)
    fitted.caption, fitted.caption_justify = t.caption, t.caption_justify
    for c in cols:
        fitted.add_column(c.header, justify=c.justify, no_wrap=c.no_wrap, overflow=c.overflow)
    for row in zip(*(c.cells for c in cols), strict=True):
        fitted.add_row(*row)
    return fitted, left_out, full


def print_fitted(
    con: Console,
    t: Table,
    *,
    drop: tuple[tuple[str, ...], ...] = (),
    wrap: tuple[str, ...] = (),
    how: str = "",
) -> list[str]:
    """Print a table fitted to the console, then which columns it left out and what shows them
    (`how`, formatted with {full}: the width that would); a table that cannot fit, a row per line.
    Returns the columns left out."""
    fitted, left_out, full = fit(t, con.width, drop, wrap)
    if fitted is None:
        print_rows(con, t)
        return []
    con.print(fitted)
    if left_out:
        more = f" or {how.format(full=full)}" if how else ""
        con.print(
            f"(not shown at {con.width} columns: {'; '.join(left_out)}; a wider terminal{more} shows them)",
            highlight=False,
            soft_wrap=True,
        )
    return left_out


def print_rows(con: Console, t: Table) -> None:
    """Each row as a bullet, its first cell (what the row is about) then every other cell after its
    column's name, wrapped under itself: nothing cut, nothing left out, however narrow the console."""
    headers = [escape(str(c.header)) for c in t.columns]
    rows = Table.grid(padding=(0, 1))
    rows.add_column(no_wrap=True)
    rows.add_column()
    for first, *rest in zip(*(c.cells for c in t.columns), strict=True):
        cells = [f"[dim]{h}:[/] {cell}" for h, cell in zip(headers[1:], rest, strict=True)]
        rows.add_row("•", " · ".join([f"[bold]{first}[/]", *cells]))
    con.print(rows, highlight=False)
