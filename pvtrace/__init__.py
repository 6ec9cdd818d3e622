"""pvtrace: find where virtual machines lose time to spinlocks."""

import os

__version__ = "0.1.0"

# polars allocates through its own jemalloc and sets it to hand freed pages back to the
# kernel within 0.5-1 s. An analysis frees and reallocates big columns at every step, so it
# then spends a quarter of its time in page faults (10M events: 718k faults, 1.5 s of system
# time; with these settings 124k and 0.3 s, benchmarks/README.md). Freed pages are kept for
# reuse and returned after 10 s idle. One arena per CPU (jemalloc's default is four) lets a
# page freed by one polars thread serve another's next column: a fresh process then faults in
# 18% fewer pages (10M events: 560k -> 460k faults, about 0.25 s less system time).
# polars prefixes its own setting to this, and the last one wins; it must be set before polars
# is first imported. A user's own setting wins. polars also writes its setting into the
# environment, so a process started by one that had imported polars inherits polars' string:
# that is not a user's choice, and ours replaces it.
_POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"
if not os.environ.get("_RJEM_MALLOC_CONF", "").removeprefix(_POLARS_OWN).strip(","):
    os.environ["_RJEM_MALLOC_CONF"] = (
        f"narenas:{os.cpu_count() or 1},dirty_decay_ms:10000,muzzy_decay_ms:10000"
    )
