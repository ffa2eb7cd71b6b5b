"""Line-level deduplication, exact and global, as CCNet does it (its `dedup` step), in three parts:

1. `hash_lines`: each document's lines, normalised for dedup (`pipeline.text`), hashed to 64 bits
   (xxh3). Repeats inside a document are dropped here (the first copy stays).
2. `LineCensus`: a commutative, associative reduction over (hash, document order) pairs, run per
   hash range (the top bits of the hash) so that no process ever holds every line. For each
   distinct line it keeps the hash and the order key of the first document holding it, with the
   top bit of that key marking "held by two or more documents": 16 bytes per distinct line.
   Only the duplicated lines leave the census (`DuplicateTable`).
3. `ApplyDedup`: drops, from each document, the lines the table marks:
   - `remove_all` (CCNet): every copy of a line that occurs in two or more documents goes;
   - `keep_first`: the copy in the document that comes first in the input order (file, record)
     stays; the order does not depend on how many workers ran.
Documents left with no lines are dropped as `all_lines_duplicate`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipeline.accounting import StageStats
from pipeline.text import normalize_for_dedup

SHARED = np.uint64(1 << 63)  # flag bit in a census entry's order key: seen in >= 2 documents
ORDER_MASK = np.uint64((1 << 63) - 1)
POLICIES = ("remove_all", "keep_first")


def line_hashes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, hashes): hashes[offsets[i]:offsets[i+1]] are the hashes of document i's lines."""
    lines = pc.split_pattern(text, "\n")
    offsets = lines.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = offsets - offsets[0]
    normalized = normalize_for_dedup(lines.flatten())
    hashes = np.fromiter(
        (xxhash.xxh3_64_intdigest(s) for s in normalized.cast(pa.binary()).to_pylist()),
        dtype=np.uint64,
        count=len(normalized),
    )
    return offsets, hashes


def unique_in_document(offsets: np.ndarray, hashes: np.ndarray) -> list[np.ndarray]:
    """Per document, the positions of its lines that are the first copy of their hash in that document."""
    keep = []
    for start, end in zip(offsets[:-1], offsets[1:]):
        _, first = np.unique(hashes[start:end], return_index=True)
        keep.append(np.sort(first))
    return keep


def census_parts(hashes: np.ndarray, orders: np.ndarray, range_bits: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Split (hash, order) pairs by hash range: range r holds the hashes whose top `range_bits` bits are r."""
    if range_bits == 0:
        return {0: (hashes, orders)}
    ranges = (hashes >> np.uint64(64 - range_bits)).astype(np.int64)
    sort = np.argsort(ranges, kind="stable")
    ranges, hashes, orders = ranges[sort], hashes[sort], orders[sort]
    present, starts = np.unique(ranges, return_index=True)
    ends = np.r_[starts[1:], len(ranges)]
    parts = {}
    for r, a, b in zip(present, starts, ends):
        parts[int(r)] = (hashes[a:b], orders[a:b])
    return parts


def compact(hashes: np.ndarray, orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce (hash, order-with-flag) pairs to one entry per distinct hash: the smallest order, with the
    SHARED flag set if the hash came from two or more documents (or was already flagged)."""
    if len(hashes) == 0:
        return hashes.astype(np.uint64), orders.astype(np.uint64)
    flags = (orders & SHARED) != 0
    plain = orders & ORDER_MASK
    sort = np.lexsort((plain, hashes))
    hashes, plain, flags = hashes[sort], plain[sort], flags[sort]
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
    counts = np.diff(np.r_[starts, len(hashes)])
    shared = (counts > 1) | np.logical_or.reduceat(flags, starts)
    out_orders = plain[starts] | np.where(shared, SHARED, np.uint64(0))
    return hashes[starts], out_orders


@dataclasses.dataclass
class LineCensus:
    """The accumulator of one hash range. `add` buffers; buffers are compacted past `buffer_limit`."""

    buffer_limit: int = 1 << 20
    hashes: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.uint64))
    orders: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.uint64))
    _pending: list = dataclasses.field(default_factory=list)
    _pending_n: int = 0

    def add(self, hashes: np.ndarray, orders: np.ndarray) -> "LineCensus":
        self._pending.append((hashes, orders))
        self._pending_n += len(hashes)
        if self._pending_n >= self.buffer_limit:
            self.flush()
        return self

    def merge(self, other: "LineCensus") -> "LineCensus":
        other.flush()
        return self.add(other.hashes, other.orders)

    def flush(self) -> "LineCensus":
        if self._pending:
            hs = np.concatenate([self.hashes] + [h for h, _ in self._pending])
            os_ = np.concatenate([self.orders] + [o for _, o in self._pending])
            self._pending, self._pending_n = [], 0
            self.hashes, self.orders = compact(hs, os_)
        return self

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.orders.nbytes

    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, first document order) of the lines held by two or more documents, sorted by hash."""
        self.flush()
        shared = (self.orders & SHARED) != 0
        return self.hashes[shared], self.orders[shared] & ORDER_MASK


@dataclasses.dataclass
class DuplicateTable:
    """The duplicated lines of the whole input: sorted hashes and the order key of their first holder."""

    hashes: np.ndarray
    first: np.ndarray

    @classmethod
    def from_ranges(cls, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> "DuplicateTable":
        # Ranges are the top bits of the hash, so concatenating them in range order keeps the sort.
        parts = sorted(parts, key=lambda p: p[0])
        if not parts:
            return cls(np.empty(0, np.uint64), np.empty(0, np.uint64))
        return cls(np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(is_duplicate, first holder's order) for each hash."""
        if len(self.hashes) == 0:
            return np.zeros(len(hashes), bool), np.zeros(len(hashes), np.uint64)
        idx = np.searchsorted(self.hashes, hashes)
        idx = np.minimum(idx, len(self.hashes) - 1)
        found = self.hashes[idx] == hashes
        return found, self.first[idx]


def duplicate_table(batches, range_bits: int) -> DuplicateTable:
    """The census over hashed batches, in this process (tests, benchmarks, `run_local`); the Beam jobs
    run the same reduction as a CombinePerKey per hash range (beam_jobs/common.py: line_census)."""
    census: dict[int, LineCensus] = {}
    for batch in batches:
        for r, (h, o) in census_parts(*census_input(batch), range_bits).items():
            census.setdefault(r, LineCensus()).add(h, o)
    return DuplicateTable.from_ranges([(r, *c.duplicates()) for r, c in census.items()])


@dataclasses.dataclass
class HashLines:
    """Adds `_line_hashes` (list<uint64>, one per line) and drops repeats of a line inside a document."""

    name: str = "dedup_in_document"

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats(self.name, docs_in=batch.num_rows, docs_out=batch.num_rows)
        if batch.num_rows == 0:
            return batch.append_column("_line_hashes", pa.array([], pa.list_(pa.uint64()))), stats
        text = batch.column("text")
        stats.chars_in = int(pc.sum(pc.utf8_length(text)).as_py() or 0)
        offsets, hashes = line_hashes(text)
        stats.lines_in = len(hashes)
        keep = unique_in_document(offsets, hashes)
        texts, hash_lists, nlines = [], [], []
        for i, positions in enumerate(keep):
            lines = text[i].as_py().split("\n")
            if len(positions) == len(lines):
                texts.append(text[i].as_py())
            else:
                texts.append("\n".join(lines[p] for p in positions))
            hash_lists.append(hashes[offsets[i] + positions])
            nlines.append(len(positions))
        out = _replace(batch, text=pa.array(texts, pa.string()), nlines=pa.array(nlines, pa.int32()))
        flat = np.concatenate(hash_lists) if hash_lists else np.empty(0, np.uint64)
        list_offsets = np.r_[0, np.cumsum([len(h) for h in hash_lists])].astype(np.int32)
        out = out.append_column("_line_hashes", pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(flat, pa.uint64())))
        stats.lines_out = len(flat)
        stats.chars_out = int(pc.sum(pc.utf8_length(out.column("text"))).as_py() or 0)
        return out, stats


def census_input(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, document orders) of every line of a hashed batch, for the census."""
    lists = batch.column("_line_hashes")
    hashes = lists.flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    orders = np.repeat(batch.column("_ord").to_numpy(zero_copy_only=False).astype(np.uint64), lengths)
    return hashes, orders


@dataclasses.dataclass
class ApplyDedup:
    """Drops the lines that the duplicate table marks (see module doc); needs `table` set before use."""

    policy: str = "remove_all"
    table: DuplicateTable | None = None
    name: str = "dedup"

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"unknown dedup policy {self.policy!r}: one of {', '.join(POLICIES)}")

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        assert self.table is not None, "ApplyDedup.table must be set"
        stats = StageStats(self.name, docs_in=batch.num_rows)
        if batch.num_rows == 0:
            return batch.drop_columns(["_line_hashes"]), stats
        hashes, orders = census_input(batch)
        dup, first = self.table.lookup(hashes)
        drop = dup if self.policy == "remove_all" else dup & (first != orders)
        lengths = pc.list_value_length(batch.column("_line_hashes")).to_numpy(zero_copy_only=False)
        bounds = np.r_[0, np.cumsum(lengths)]
        text = batch.column("text")
        keep_rows, texts, nlines = [], [], []
        for i in range(batch.num_rows):
            doc_text = text[i].as_py()
            stats.chars_in += len(doc_text)
            stats.lines_in += int(lengths[i])
            doc_drop = drop[bounds[i] : bounds[i + 1]]
            if not doc_drop.any():
                new_text, n = doc_text, int(lengths[i])
            else:
                lines = doc_text.split("\n")
                kept = [line for line, d in zip(lines, doc_drop) if not d]
                new_text, n = "\n".join(kept), len(kept)
            if n == 0:
                stats.drop("all_lines_duplicate")
                continue
            keep_rows.append(i)
            texts.append(new_text)
            nlines.append(n)
            stats.chars_out += len(new_text)
            stats.lines_out += n
        stats.docs_out = len(keep_rows)
        out = batch.drop_columns(["_line_hashes"]).take(pa.array(keep_rows, pa.int64()))
        out = _replace(out, text=pa.array(texts, pa.string()), nlines=pa.array(nlines, pa.int32()))
        return out, stats


def _replace(batch: pa.RecordBatch, **columns: pa.Array) -> pa.RecordBatch:
    for name, values in columns.items():
        i = batch.schema.get_field_index(name)
        batch = batch.set_column(i, batch.schema.field(i), values)
    return batch
