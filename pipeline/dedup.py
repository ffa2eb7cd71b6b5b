"""Line-level deduplication, exact and global, as CCNet does it (its `dedup` step), at crawl scale.

1. `HashLines` (per file): each document's lines, normalised for dedup (`pipeline.text`), hashed to 64
   bits (xxh3). Repeats inside a document are dropped here (the first copy stays). The file's
   (hash, document order) pairs go to the work folder sorted by hash (`pipeline.pairs`).
2. `LineCensus` (a barrier): the hash space is cut into ranges, as many as the line count needs for a
   range to fit `range_budget_bytes`; the census of one range reads only that range's pairs from each
   file, finds the lines held by two or more documents, and writes the (order, hash) pairs to drop,
   sorted by order. Nothing is broadcast: no process holds more than one range.
3. `ApplyDedup` (per file): the join. The file reads, from each range's drop list, only its own order
   range, and drops those lines:
   - `remove_all` (CCNet): every copy of a line that occurs in two or more documents goes;
   - `keep_first`: the copy in the document that comes first in the input order (file, record)
     stays; the order does not depend on how many workers ran.
   Documents left with no lines are dropped as `all_lines_duplicate`.
Scope: global by default; `group_files=N` compares only files in the same group of N consecutive
inputs (cc_net's `hash_in_mem`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipeline.pairs import read_pairs, sort_pairs, write_pairs
from pipeline.schema import ORD_FILE_SHIFT as OFFSET_BITS
from pipeline.step import Outcome, Step
from pipeline.text import normalize_for_dedup

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


@dataclasses.dataclass
class HashLines(Step):
    """Adds `_line_hashes` (list<uint64>, one per line) and drops repeats of a line inside a document."""

    name: str = "dedup_in_document"

    def process(self, batch, notes):
        text = batch.column("text")
        offsets, hashes = line_hashes(text)
        keep = unique_in_document(offsets, hashes)
        texts = text.to_pylist()
        hash_lists = []
        for i, positions in enumerate(keep):
            if len(positions) != offsets[i + 1] - offsets[i]:
                lines = texts[i].split("\n")
                texts[i] = "\n".join(lines[p] for p in positions)
            hash_lists.append(hashes[offsets[i] + positions])
        flat = np.concatenate(hash_lists) if hash_lists else np.empty(0, np.uint64)
        list_offsets = np.r_[0, np.cumsum([len(h) for h in hash_lists])].astype(np.int32)
        column = pa.ListArray.from_arrays(pa.array(list_offsets), pa.array(flat, pa.uint64()))
        return Outcome(text=texts, columns={"_line_hashes": column})


def census_input(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, document orders) of every line of a hashed batch."""
    lists = batch.column("_line_hashes")
    hashes = lists.flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    orders = np.repeat(batch.column("_ord").to_numpy(zero_copy_only=False).astype(np.uint64), lengths)
    return hashes, orders


# --- the census: hash ranges on disk ----------------------------------------------------------------

HASHES_DIR, DROPS_DIR = "hashes", "drops"  # under work/<census name>/


CENSUS_BYTES_PER_LINE = 64  # a range's pairs (16 bytes a line) and the sort's copies, measured: bench/census_sim.py


def range_count(lines: int, range_budget_bytes: int, minimum: int = 1) -> int:
    """Ranges enough for one range's census to fit the budget."""
    return max(minimum, -(-lines * CENSUS_BYTES_PER_LINE // max(range_budget_bytes, 1)))


def range_bounds(r: int, ranges: int) -> tuple[int, int | None]:
    lo = (r << 64) // ranges
    return lo, None if r == ranges - 1 else ((r + 1) << 64) // ranges


def write_file_hashes(work, file_index: int, hashes: np.ndarray, orders: np.ndarray, census: str = "census") -> None:
    keys, values = sort_pairs(hashes, orders)
    write_pairs(work.path(census, HASHES_DIR, f"{file_index:06d}.pairs"), keys, values)


def duplicated_pairs(hashes: np.ndarray, orders: np.ndarray, policy: str, group_files: int = 0,
                     ties_in_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(orders, hashes) of the lines to drop among these pairs (one hash range of the whole input),
    sorted by (order, hash). Pairs are unique: a document holds a line once (`HashLines`).
    `ties_in_order`: pairs of equal hash already come in order (each file's sorted run, files in
    input order, as the census reads them), so a stable sort by hash alone suffices (less memory)."""
    if group_files:
        groups = (orders >> np.uint64(OFFSET_BITS)) // np.uint64(group_files)
        sort = np.lexsort((orders, hashes, groups))
        groups = groups[sort]
    else:
        sort = np.argsort(hashes, kind="stable") if ties_in_order else np.lexsort((orders, hashes))
    hashes, orders = hashes[sort], orders[sort]
    del sort
    new = np.empty(len(hashes), bool)
    new[:1] = True
    np.not_equal(hashes[1:], hashes[:-1], out=new[1:])
    if group_files:
        new[1:] |= groups[1:] != groups[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(hashes)))
    shared = np.repeat(counts > 1, counts)
    drop = shared if policy == "remove_all" else shared & ~new  # keep_first: the smallest order stays
    return sort_pairs(orders[drop], hashes[drop])


def census_range(work, r: int, ranges: int, files: int, policy: str, group_files: int = 0, census: str = "census") -> dict:
    """The census of hash range r over every file's pairs; writes that range's drop list."""
    lo, hi = range_bounds(r, ranges)
    parts = [read_pairs(work.path(census, HASHES_DIR, f"{i:06d}.pairs"), lo, hi) for i in range(files)]
    hashes = np.concatenate([h for h, _ in parts]) if parts else np.empty(0, np.uint64)
    orders = np.concatenate([o for _, o in parts]) if parts else np.empty(0, np.uint64)
    del parts
    drop_orders, drop_hashes = duplicated_pairs(hashes, orders, policy, group_files, ties_in_order=True)
    write_pairs(work.path(census, DROPS_DIR, f"{r:06d}.pairs"), drop_orders, drop_hashes)
    return {"lines": int(len(hashes)), "dropped_lines": int(len(drop_orders)), "bytes": int(hashes.nbytes + orders.nbytes)}


def file_drops(work, file_index: int, ranges: int, census: str = "census") -> tuple[np.ndarray, np.ndarray]:
    """The join: (orders, hashes) of this file's lines to drop, read from each range's drop list."""
    lo, hi = file_index << OFFSET_BITS, (file_index + 1) << OFFSET_BITS
    parts = [read_pairs(work.path(census, DROPS_DIR, f"{r:06d}.pairs"), lo, hi) for r in range(ranges)]
    if not parts:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    return sort_pairs(np.concatenate([o for o, _ in parts]), np.concatenate([h for _, h in parts]))


def pairs_in(orders: np.ndarray, hashes: np.ndarray, drop_orders: np.ndarray, drop_hashes: np.ndarray) -> np.ndarray:
    """For each (order, hash), whether it is among the drop pairs (both sides unique)."""
    n = len(orders)
    if n == 0 or len(drop_orders) == 0:
        return np.zeros(n, bool)
    o = np.concatenate([orders, drop_orders])
    h = np.concatenate([hashes, drop_hashes])
    src = np.concatenate([np.arange(n), np.full(len(drop_orders), -1)])
    sort = np.lexsort((h, o))
    o, h, src = o[sort], h[sort], src[sort]
    same = np.flatnonzero((o[1:] == o[:-1]) & (h[1:] == h[:-1]))
    mask = np.zeros(n, bool)
    for side in (src[same], src[same + 1]):
        mask[side[side >= 0]] = True
    return mask


@dataclasses.dataclass
class ApplyDedup(Step):
    """Drops the lines of this file's drop list (module doc)."""

    drops: tuple = (np.empty(0, np.uint64), np.empty(0, np.uint64))  # (orders, hashes), from `file_drops`
    name: str = "dedup"
    reason: str = "all_lines_duplicate"  # a document left with no line; "duplicate" for whole-content hashes

    def process(self, batch, notes):
        hashes, orders = census_input(batch)
        drop = pairs_in(orders, hashes, *self.drops)
        lengths = pc.list_value_length(batch.column("_line_hashes")).to_numpy(zero_copy_only=False)
        bounds = np.r_[0, np.cumsum(lengths)]
        texts = batch.column("text").to_pylist()
        reasons = [None] * len(texts)
        for i in np.flatnonzero(np.add.reduceat(drop, bounds[:-1]) if len(drop) else np.zeros(0, int)):
            keep = ~drop[bounds[i] : bounds[i + 1]]
            if not keep.any():
                reasons[i] = self.reason
                continue
            lines = texts[i].split("\n")
            texts[i] = "\n".join(line for line, k in zip(lines, keep) if k)
        return Outcome(drop=reasons, text=texts, remove=("_line_hashes",))
