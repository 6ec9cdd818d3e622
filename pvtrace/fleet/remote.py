"""Traces named by fsspec URLs (s3://, gs://, az://, memory://, file://...): the client lists and
stamps them, each worker copies its trace's files (and their side files) to a local temporary
folder and analyzes that, so every input format works the same from any store.

A `file://` URL is a local path and is read in place. Credentials come from the usual places of
each store (environment, config files, instance roles), on the client and on every worker.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pvtrace.errors import UsageError

# side files read with a trace: <name>.vcpus.csv, <name>.guest-offsets.csv, <stem>.record.json
_SIDE_ENDINGS = (".csv", ".json")


def is_url(name: str) -> bool:
    return "://" in name


def local_path(name: str) -> Path | None:
    """The local path a name means: a plain path, or a file:// URL; None for any other store."""
    if not is_url(name):
        return Path(name)
    if name.startswith("file://"):
        return Path(name.removeprefix("file://"))
    return None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it); a one-line error for an unknown protocol or a missing
    driver (s3fs, gcsfs, adlfs...)."""
    import fsspec.core

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{url}: {str(exc).splitlines()[0]}") from None


def expand(url: str, skip_endings: tuple[str, ...]) -> list[str]:
    """A URL of a file, a folder (every file under it but hidden ones and those ending in
    skip_endings) or a glob, as file URLs in name order."""
    from glob import has_magic

    fs, path = filesystem(url)
    try:
        if has_magic(path):
            hits = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            hits = [
                p
                for p in fs.find(path)
                if not posixpath.basename(p).startswith(".") and not p.lower().endswith(skip_endings)
            ]
        elif fs.isfile(path):
            hits = [path]
        else:
            raise UsageError(f"{url}: no such file or folder")
    except OSError as exc:
        raise UsageError(f"{url}: {exc}") from None
    if not hits:
        raise UsageError(f"{url}: the pattern matches no file")
    return [fs.unstrip_protocol(p) for p in sorted(hits)]


def join(base_url: str, relative: str) -> str:
    """A manifest's relative path, against the URL of the folder holding the manifest."""
    if is_url(relative) or relative.startswith("/"):
        return relative
    fs, path = filesystem(base_url)
    return fs.unstrip_protocol(posixpath.normpath(posixpath.join(posixpath.dirname(path), relative)))


def _side_files(fs: Any, path: str) -> list[str]:
    prefix = posixpath.basename(path).split(".")[0] + "."
    try:
        siblings = fs.ls(posixpath.dirname(path), detail=False)
    except OSError:
        return []
    return sorted(
        s
        for s in siblings
        if posixpath.basename(s).startswith(prefix) and s.rstrip("/") != path and s.endswith(_SIDE_ENDINGS)
    )


def stamp(url: str) -> str:
    """What identifies the file's version without reading it: size and modification time (or
    ETag, or creation time), of the file and of its side files."""
    fs, path = filesystem(url)
    try:
        parts = []
        for p in (path, *_side_files(fs, path)):
            info = fs.info(p)
            when = next(
                (
                    info[k]
                    for k in ("mtime", "LastModified", "last_modified", "ETag", "etag", "created")
                    if info.get(k)
                ),
                None,
            )
            parts.append({"path": p, "size": info.get("size"), "when": str(when)})
    except FileNotFoundError:
        raise UsageError(f"{url}: no such file") from None
    return json.dumps(parts, sort_keys=True)


def open_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        return f.read()


@contextmanager
def localized(files: list[str]) -> Iterator[list[Path]]:
    """Local paths of a trace's files: local ones as they are; the others copied with their side
    files into one temporary folder (names kept, so the format is detected as usual), removed
    after."""
    local = [local_path(f) for f in files]
    if all(p is not None for p in local):
        yield local  # type: ignore[misc]
        return
    tmp = Path(tempfile.mkdtemp(prefix="pvtrace-fleet-"))
    try:
        out = []
        for i, (name, path) in enumerate(zip(files, local, strict=True)):
            if path is not None:
                out.append(path)
                continue
            fs, remote = filesystem(name)
            folder = tmp / str(i)  # files of one capture may share a name in different folders
            folder.mkdir()
            for p in (remote, *_side_files(fs, remote)):
                fs.get_file(p, str(folder / posixpath.basename(p)))
            out.append(folder / posixpath.basename(remote))
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
