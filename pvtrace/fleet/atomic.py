"""Fleet folders written whole: a part's folder is built under a temporary name and renamed into
place once, and temporaries of killed attempts are swept. Single files go through
pvtrace.outputs.atomic_file (force: a rerun replaces a file whole)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name next to path: two attempts at the same part never share a temp file."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def publish_dir(tmp: Path, final: Path) -> bool:
    """Rename a finished temporary folder to its final name. False (and tmp removed) when another
    attempt published it first: a part is written once, never twice or merged."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if final.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise


def sweep_partials(folder: Path) -> int:
    """Remove temporaries left by killed attempts; returns how many."""
    n = 0
    if folder.is_dir():
        for p in folder.glob(".*.partial"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n
