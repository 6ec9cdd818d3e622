"""pvtrace: find where virtual machines lose time to spinlocks."""

__version__ = "0.1.0"
