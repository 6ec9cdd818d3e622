"""A figure of a report page: a chart, or the reason there is none.

Chart functions return a Figure so that a page can say "no LWP incidents:
guest-only trace lacks vCPU states" in place of an empty plot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import altair as alt
import polars as pl


@dataclass
class Figure:
    """One figure: `chart` is None when the data cannot or did not give one, and `note` says why."""

    name: str  # slug: DOM id and file name when exported
    title: str
    chart: alt.TopLevelMixin | None = None
    caption: str = ""
    note: str = ""  # shown instead of the chart when chart is None, or under it
    table: pl.DataFrame | None = None  # a small, already formatted table shown with (or without) the chart
    html: str | None = None  # ready HTML (an interactive table), shown after the chart
    limit: bool = False  # empty because the trace cannot give it: listed in the page's one limits box

    @property
    def is_empty(self) -> bool:
        return self.chart is None and self.table is None and self.html is None

    def spec(self) -> dict[str, Any]:
        """The chart's Vega-Lite spec (data inlined)."""
        if self.chart is None:
            raise ValueError(f"figure {self.name} has no chart: {self.note}")
        return self.chart.to_dict()


def no_data(name: str, title: str, reason: str, caption: str = "") -> Figure:
    """A figure that says why there is nothing to plot."""
    return Figure(name=name, title=title, chart=None, caption=caption, note=reason)
