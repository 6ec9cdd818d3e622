"""A text input as a stream of raw-record batches, in bounded memory whatever its size.

A plain file is one lazy query (`scan_lines` + the fixed-column fast path) that polars'
streaming engine runs on every core, handing back batches of rows. Compressed inputs and
the trace-cmd pipe are read in blocks of whole lines, two blocks at a time through the same
query (polars releases the GIL). Batches are parsed independently; this module stitches
them: continuation lines at the start of a batch join the previous batch's last record,
and LOST markers at the end of a batch take their time from the next record on their CPU,
however many batches later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import polars as pl

from pvtrace.ingest.compressed import stream_damage
from pvtrace.ingest.problems import Problems
from pvtrace.ingest.raw import BUFFER_STARTED, LOST_EVENTS, RAW_SCHEMA, empty_raw
from pvtrace.ingest.records import (
    BatchResult,
    FormatSpec,
    Layout,
    ParseInfo,
    ParseOptions,
    attach_extra,
    learn_layouts,
    parse_batch,
    prepare,
)
from pvtrace.ingest.textblocks import iter_byte_blocks, replace_invalid_utf8, scan_block

BATCH_ROWS = 100_000
IN_FLIGHT = 2  # blocks parsed at once


def _skip_lines(f: BinaryIO, n: int) -> None:
    """Position f just after its n-th newline."""
    seen = 0
    while seen < n:
        pos = f.tell()
        buf = f.read(1 << 22)
        if not buf:
            return
        k = buf.count(b"\n")
        if seen + k < n:
            seen += k
            continue
        idx = -1
        for _ in range(n - seen):
            idx = buf.index(b"\n", idx + 1)
        f.seek(pos + idx + 1)
        return


class RawStream:
    """Parses one input's batches in order and stitches them into raw frames."""

    def __init__(self, spec: FormatSpec, options: ParseOptions, info: ParseInfo, head: bytes):
        self.spec = spec
        self.options = options
        self.info = info
        self.layout = self._layout_from(head)
        self.ends_mid_line = False  # the input's last byte is not a newline: its last line may be cut
        self._last_line: pl.DataFrame | None = None  # (line, text) of the last line seen
        self.lines_read = 0  # lines of a stream read so far (final once the stream has ended)

    def _layout_from(self, head: bytes) -> Layout | None:
        lines = head.decode("utf-8", errors="replace").splitlines()[:2000]
        if not lines:
            return None
        texts = pl.select(pl.Series("text", lines)).lazy().with_row_index("line")
        cleaned = prepare(texts, self.spec, self.options, None).collect()["text"].to_list()
        found = learn_layouts(cleaned, self.spec, max_layouts=1)
        return found[0] if found else None

    # -- prepared batches ---------------------------------------------------------------------------
    def _prepared_file(self, path: Path) -> Iterator[pl.DataFrame]:
        """A plain file scanned by polars: one lazy query over the whole file (the cheapest path)."""
        lf = prepare(scan_block(path, 1), self.spec, self.options, self.layout)
        n = 0
        try:
            for batch in lf.collect_batches(chunk_size=BATCH_ROWS):
                n += batch.height
                self.info.n_bytes += int(batch["text"].str.len_bytes().sum() or 0) + batch.height
                yield batch
            self.ends_mid_line = _ends_mid_line(path)
        except pl.exceptions.ComputeError as exc:
            if "utf" not in str(exc).lower():
                raise
            # Bytes that are not UTF-8: read the rest block by block with a tolerant decoder.
            with open(path, "rb") as f:
                _skip_lines(f, n)
                yield from self._prepared(f, b"", first_line=n + 1)

    def _prepared(self, stream: BinaryIO, head: bytes, first_line: int = 1) -> Iterator[pl.DataFrame]:
        """Blocks of a stream (compressed input, trace-cmd pipe): two in flight on polars' streaming engine."""
        # Two blocks in flight: polars releases the GIL, so both cores work while this thread stitches.
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            pending: deque[Future] = deque()
            blocks = iter_byte_blocks(stream, head=head)
            while True:
                while len(pending) < IN_FLIGHT and (data := next(blocks, None)) is not None:
                    self.ends_mid_line = not data.endswith(b"\n")
                    self.info.n_bytes += len(data)
                    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
                    pending.append(pool.submit(self._prepare, data, first_line))
                    first_line += n_lines
                    self.lines_read = first_line - 1
                if not pending:
                    return
                block, bad = pending.popleft().result()
                if bad is not None:
                    self.info.problems.add_rows("invalid_utf8", bad)
                for start in range(0, block.height, BATCH_ROWS):
                    yield block.slice(start, BATCH_ROWS)

    def _prepare(self, data: bytes, first_line: int) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """One block through the lazy fast path; undecodable bytes become U+FFFD (those lines returned too)."""
        try:
            lf = prepare(scan_block(data, first_line), self.spec, self.options, self.layout)
            return lf.collect(engine="streaming"), None
        except pl.exceptions.ComputeError as exc:
            if "utf" not in str(exc).lower():
                raise
        lf = prepare(scan_block(replace_invalid_utf8(data), first_line), self.spec, self.options, self.layout)
        block = lf.collect(engine="streaming")
        return block, block.filter(pl.col("text").str.contains("\ufffd", literal=True)).select("line", "text")

    # -- stitching ---------------------------------------------------------------------------------
    def raw_chunks(self, source: Path | BinaryIO, head: bytes = b"") -> Iterator[pl.DataFrame]:
        """Raw frames of the input (a plain file, or a stream of which `head` was read), in file order."""
        batches = self._prepared_file(source) if isinstance(source, Path) else self._prepared(source, head)
        pending: pl.DataFrame | None = None  # the last batch with rows, not yet handed out
        damage = None
        for batch in batches:
            if batch.height:
                self._last_line = batch.tail(1).select("line", "text")
            res = parse_batch(batch, self.spec, self.layout)
            if damage is None and not isinstance(source, Path) and (damage := stream_damage(source)):
                # counted as soon as the reader has met it (the blocks read ahead), so that --strict
                # names it before the garbled lines it leaves at the end
                self.info.problems.add("truncated_stream", self.lines_read, damage)
            self._merge(res)
            raw = res.raw
            if pending is None:
                if res.orphans is not None and res.orphans.height:
                    self.info.problems.add_rows("orphan_continuation", res.orphans)
                pending = raw if raw.height else None
                continue
            if res.orphans is not None and res.orphans.height:
                pending = self._attach_orphans(pending, res.orphans)
            if raw.height == 0:
                continue  # keep the batch: later frames may still belong to its last record
            pending, still_open = self._resolve_markers(pending, raw)
            if still_open is not None:
                raw = pl.concat([still_open, raw]).sort("line")
            yield pending.select(RAW_SCHEMA.names())
            pending = raw
        if pending is not None:
            yield self._check_last_line(pending, damage is not None).select(RAW_SCHEMA.names())

    def _check_last_line(self, last: pl.DataFrame, damaged: bool) -> pl.DataFrame:
        """The last frame, checked for a last line without its newline. In a damaged archive that
        line is cut (the truncated_stream problem says so): its record is dropped. In a plain input
        it may be cut mid-record (a copy of a file still being written, `head -c`), or merely lack
        the newline (an excerpt): nothing tells the two apart, so the record is kept and the line
        counted (last_line_cut), which --strict makes fatal."""
        if not self.ends_mid_line or self._last_line is None:
            return last
        cut = pl.col("line") == self._last_line["line"][0]
        if last.filter(cut & ~pl.col("event").is_in([LOST_EVENTS, BUFFER_STARTED])).height == 0:
            return last  # a header, or a line already counted as not read
        if damaged:
            return last.filter(~cut)
        self.info.problems.add_rows("last_line_cut", self._last_line)
        return last

    def _merge(self, res: BatchResult) -> None:
        info = self.info
        info.stats.update(res.stats)
        info.variants.update(res.variants)
        info.ts_units.update(res.ts_units)
        for kind, rows in res.problems:
            info.problems.add_rows(kind, rows)
        if res.header_lines:
            self.spec.header(res.header_lines, info.header)

    def _attach_orphans(self, pending: pl.DataFrame, orphans: pl.DataFrame) -> pl.DataFrame:
        """Frames / continuation lines at the start of a batch belong to the previous batch's last record."""
        last = pending.tail(1)
        frame_rx = self.spec.frame_pattern or r"^\s*=>"
        extra = orphans.with_columns(
            pl.when(pl.col("text").str.contains(frame_rx))
            .then(pl.lit("frame"))
            .otherwise(pl.lit("cont"))
            .alias("kind"),
            pl.lit(last["line"][0]).alias("owner"),
            pl.lit(str(last["event"][0])).alias("owner_event"),
        )
        res = BatchResult(raw=empty_raw())
        pending = attach_extra(pending, extra, self.spec, res)
        self._merge(res)
        return pending

    def _resolve_markers(
        self, pending: pl.DataFrame, nxt: pl.DataFrame
    ) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """Markers at the end of a batch take the ts of the next record on their CPU; still open ones move on."""
        is_open = pl.col("event").is_in([LOST_EVENTS, BUFFER_STARTED]) & pl.col("ts").is_null()
        if not pending.select(is_open.any()).item():
            return pending, None
        first = (
            nxt.filter(pl.col("ts").is_not_null())
            .group_by(["source", "cpu"])
            .agg(pl.col("ts").first().alias("next_ts"))
        )
        pending = (
            pending.join(first, on=["source", "cpu"], how="left", nulls_equal=True, maintain_order="left")
            .with_columns(pl.coalesce("ts", "next_ts").alias("ts"))
            .drop("next_ts")
        )
        still_open = pending.filter(is_open)
        if still_open.height == 0:
            return pending, None
        return pending.filter(~is_open), still_open


def _ends_mid_line(path: Path) -> bool:
    """Whether a non-empty plain file's last byte is not a newline."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def iter_raw_chunks(
    source: Path | BinaryIO, spec: FormatSpec, options: ParseOptions, info: ParseInfo, head: bytes = b""
) -> Iterator[pl.DataFrame]:
    """Raw frames of a text input, one per batch of lines, in file order.

    source: a plain (uncompressed) file path, or a binary stream of which `head` was already read.
    """
    if isinstance(source, Path) and not head:
        with open(source, "rb") as f:
            head = f.read(1 << 20)
    yield from RawStream(spec, options, info, head).raw_chunks(source, head)


def read_text_records(
    path: Path, spec: FormatSpec, options: ParseOptions | None = None
) -> tuple[pl.DataFrame, ParseInfo]:
    """Parse a whole (possibly compressed) text file with one format spec, in memory."""
    from pvtrace.ingest.compressed import open_input

    options = options or ParseOptions()
    stream, compression, raw_file = open_input(path)
    info = ParseInfo(path=str(path), format=spec.name, compression=compression, problems=Problems(str(path)))
    with stream, raw_file:
        source: Path | BinaryIO = path if compression is None else stream
        chunks = list(iter_raw_chunks(source, spec, options, info))
    return (pl.concat(chunks) if chunks else empty_raw()), info
