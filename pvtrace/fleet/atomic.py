"""Write-then-rename, so a reader or a rerun never sees half a part (a local helper until
pvtrace has a shared one)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import polars as pl


def temp_sibling(path: Path) -> Path:
    """A hidden, unique name next to path: two attempts at the same part never share a temp file."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write df to path through a temporary file; the rename replaces any earlier copy whole."""
    tmp = temp_sibling(path)
    try:
        df.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: Path) -> None:
    tmp = temp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
