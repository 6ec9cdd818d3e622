"""pvtrace: find where virtual machines lose time to spinlocks."""

import os

__version__ = "0.1.0"

# polars allocates through its own jemalloc, set to hand freed pages back to the kernel within
# 0.5-1 s. An analysis frees and reallocates big columns at every step, so it then spends a
# quarter of its time in page faults (benchmarks/README.md). Here freed pages are kept for reuse
# and returned over 3 s: the steps of a 10M-event analysis each take under a second, and 10 s
# held a 50M-event run at 6.2 GiB instead of 5.4 for no measurable gain. One arena per CPU
# (jemalloc's default is four) lets a page freed by one polars thread serve another's next
# column: 18% fewer page faults in a fresh process.
# This must be set before polars is first imported; polars prefixes its own setting, and the
# last one wins. A user's own setting wins. polars also writes its setting into the
# environment, so a process started by one that had imported polars inherits polars' string:
# that is no user's choice, and ours replaces it.
_POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"
if not os.environ.get("_RJEM_MALLOC_CONF", "").removeprefix(_POLARS_OWN).strip(","):
    os.environ["_RJEM_MALLOC_CONF"] = f"narenas:{os.cpu_count() or 1},dirty_decay_ms:3000,muzzy_decay_ms:3000"
