"""The on-disk format of the dedup intermediates: sorted (key, value) pairs of 64-bit integers.

`NAME.pairs` holds n records of two little-endian uint64 (key, value), sorted by key then value;
`NAME.pairs.idx` holds, as a .npy array, the key of every `STRIDE`-th record. A reader of a key
range [lo, hi) reads the small index and then only the bytes of that range (one ranged read), so a
census of one hash range reads that range's hashes from each file and nothing else, on a local disk
or an object store alike.

Two uses (pipeline/dedup.py): per input file, (line hash, document order) sorted by hash — the
census reads a hash range from each; per hash range, (document order, line hash) of the lines to
drop, sorted by order — each file reads its own order range (the join, with no broadcast).
"""
from __future__ import annotations

import io

import numpy as np

from pipeline.runs import atomic_write_bytes, open_random_access, read_bytes

STRIDE = 4096
RECORD = np.dtype([("key", "<u8"), ("value", "<u8")])
INDEX_SUFFIX = ".idx"


def sort_pairs(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((values, keys))
    return keys[order], values[order]


def write_pairs(path: str, keys: np.ndarray, values: np.ndarray) -> None:
    """Write pairs already sorted by (key, value) (see `sort_pairs`)."""
    records = np.empty(len(keys), RECORD)
    records["key"], records["value"] = keys, values
    index = io.BytesIO()
    np.save(index, np.ascontiguousarray(records["key"][::STRIDE]), allow_pickle=False)
    # The index first, the data last: a reader checks the data file exists (the completion marker
    # of the task that wrote both comes after both).
    atomic_write_bytes(path + INDEX_SUFFIX, index.getvalue())
    atomic_write_bytes(path, records.tobytes())


def read_pairs(path: str, lo: int = 0, hi: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(keys, values) of the pairs with lo <= key < hi (hi None: to the end)."""
    index = np.load(io.BytesIO(read_bytes(path + INDEX_SUFFIX)), allow_pickle=False)
    if len(index) == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    first = max(int(np.searchsorted(index, np.uint64(lo), "left")) - 1, 0) * STRIDE
    last_block = len(index) if hi is None else int(np.searchsorted(index, np.uint64(hi), "left"))
    with open_random_access(path) as f:
        f.seek(first * RECORD.itemsize)
        n = None if last_block >= len(index) else (last_block * STRIDE - first) * RECORD.itemsize
        raw = f.read() if n is None else f.read(n)
    records = np.frombuffer(raw, RECORD)
    keys = records["key"]
    a = int(np.searchsorted(keys, np.uint64(lo), "left"))
    b = len(keys) if hi is None else int(np.searchsorted(keys, np.uint64(hi), "left"))
    return keys[a:b].copy(), records["value"][a:b].copy()
