"""pvtrace sets polars' allocator up for analysis (pvtrace/__init__.py), unless the user did."""

import os
import subprocess
import sys

import pytest

POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"
OURS = f"narenas:{os.cpu_count() or 1},dirty_decay_ms:3000,muzzy_decay_ms:3000"
PROBE = "import os, pvtrace, polars; print(os.environ['_RJEM_MALLOC_CONF'])"


def setting_after_import(inherited: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if inherited is not None:
        env["_RJEM_MALLOC_CONF"] = inherited
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("inherited", "last"),
    [
        (None, OURS),  # nothing set
        (POLARS_OWN, OURS),  # started by a process that had imported polars: not a user's choice
        ("narenas:1", "narenas:1"),  # the user's own
        (f"{POLARS_OWN},narenas:1", "narenas:1"),  # the user's own, passed through polars
    ],
)
def test_allocator_setting_applies_unless_the_user_chose_one(inherited, last):
    # jemalloc takes the last value of each option: what follows polars' own prefix decides
    assert setting_after_import(inherited).removeprefix(POLARS_OWN + ",").endswith(last)
