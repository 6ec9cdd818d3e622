"""The report stage: charts of an analysis and self-contained HTML pages (report, compare, experiment).

Every page inlines Vega, Vega-Lite and vega-embed and works offline; every chart
reads data already aggregated in polars, so page size does not grow with the trace.
"""

from pvtrace.report.compare import write_compare
from pvtrace.report.experiment import EXPERIMENT_COLUMNS, write_experiment_report
from pvtrace.report.figures import export_figures
from pvtrace.report.trace_page import write_report

__all__ = ["EXPERIMENT_COLUMNS", "export_figures", "write_compare", "write_experiment_report", "write_report"]
