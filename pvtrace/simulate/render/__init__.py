"""Render a simulator run as the text real kernels and tools print.

Host ftrace, per-guest ftrace, a merged `trace-cmd report`, and `perf script`,
byte for byte in their real layouts (docs/render.md says what each keeps and
loses), so ingest and analysis are tested end to end on known ground truth.
"""

from pvtrace.simulate.render.files import FORMATS, guest_path, vcpu_map_path, write_rendered
from pvtrace.simulate.render.ftrace import to_ftrace
from pvtrace.simulate.render.perf import to_perf_script
from pvtrace.simulate.render.tracecmd import to_trace_cmd_report

__all__ = [
    "FORMATS",
    "guest_path",
    "to_ftrace",
    "to_perf_script",
    "to_trace_cmd_report",
    "vcpu_map_path",
    "write_rendered",
]
