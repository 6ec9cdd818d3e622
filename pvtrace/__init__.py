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
# polars appends this to its own setting, and the last one wins; it must be set before polars
# is first imported, and a user's own setting wins.
os.environ.setdefault(
    "_RJEM_MALLOC_CONF", f"narenas:{os.cpu_count() or 1},dirty_decay_ms:10000,muzzy_decay_ms:10000"
)
