"""The analyze stage: pure functions from canonical events to interval tables and metrics."""

from pvtrace.analyze.result import Analysis
from pvtrace.analyze.run import analyze

__all__ = ["Analysis", "analyze"]
