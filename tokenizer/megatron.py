"""Token shards in the Megatron-LM indexed-dataset layout (`MMapIndexedDataset`, version 1).

See docs/token-shards.md. `PREFIX.bin` holds the tokens of every document back to back as
little-endian uint16; `PREFIX.idx` is:

    9 bytes  b"MMIDIDX\\x00\\x00"
    <Q       version = 1
    <B       dtype code (8 = uint16)
    <Q       S, number of sequences
    <Q       D, number of document-index entries (S + 1)
    S x <i4  sequence lengths (tokens)
    S x <i8  byte offsets of each sequence in .bin
    D x <i8  document indices (0, 1, ..., S: one sequence per document)

`PREFIX.src` (optional) holds one uint8 per document: the index of its source in the manifest's
`source_names`.

`ShardWriter` streams: tokens go to `.bin` as they come (through a temporary file renamed into place
on close), only the per-document lengths are kept in memory for `.idx`.
"""
from __future__ import annotations

import os
import struct
from typing import Sequence

import numpy as np

from pipeline.runs import atomic_output, atomic_write_bytes

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py DType).
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
UINT16_CODE = 8
MAX_VOCAB = 1 << 16


class ShardWriter:
    """Write one `.bin`/`.idx` (+ `.src`) shard; use as a context manager, `add` token arrays in order."""

    def __init__(self, prefix: str, write_sources: bool = True):
        self.prefix = prefix
        self.write_sources = write_sources
        self.lengths: list[np.ndarray] = []
        self.sources: list[np.ndarray] = []
        self.tokens = 0
        self._bin_ctx = atomic_output(prefix + ".bin")
        self._bin = None

    def __enter__(self) -> "ShardWriter":
        self._bin = self._bin_ctx.__enter__()
        return self

    def add(self, tokens: np.ndarray, lengths: np.ndarray, sources: np.ndarray | int = 0) -> None:
        """Append documents: `tokens` is their concatenation, `lengths` their token counts."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens):
            raise ValueError(f"{self.prefix}: {len(tokens)} tokens but lengths sum to {int(lengths.sum())}")
        if len(lengths) and lengths.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{self.prefix}: a document of {lengths.max()} tokens does not fit the int32 length field")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= MAX_VOCAB):
            raise ValueError(f"{self.prefix}: token ids outside uint16")
        self._bin.write(np.ascontiguousarray(tokens, dtype="<u2").tobytes())
        self.lengths.append(lengths)
        self.sources.append(np.broadcast_to(np.asarray(sources, dtype=np.uint8), lengths.shape).copy())
        self.tokens += len(tokens)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._bin_ctx.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            return
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        atomic_write_bytes(self.prefix + ".idx", index_bytes(lengths))
        if self.write_sources:
            sources = np.concatenate(self.sources) if self.sources else np.zeros(0, np.uint8)
            atomic_write_bytes(self.prefix + ".src", sources.astype(np.uint8).tobytes())

    @property
    def documents(self) -> int:
        return int(sum(len(x) for x in self.lengths))


def index_bytes(lengths: np.ndarray, dtype_code: int = UINT16_CODE) -> bytes:
    lengths = np.asarray(lengths, dtype=np.int64)
    itemsize = np.dtype(DTYPE_CODES[dtype_code]).itemsize
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1] * itemsize, out=pointers[1:])
    header = MAGIC + struct.pack("<Q", VERSION) + struct.pack("<B", dtype_code)
    header += struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(lengths) + 1)
    return b"".join(
        [
            header,
            lengths.astype("<i4").tobytes(),
            pointers.astype("<i8").tobytes(),
            np.arange(len(lengths) + 1, dtype="<i8").tobytes(),
        ]
    )


class IndexedDataset:
    """Read a shard: `len(ds)` documents, `ds[i]` the tokens of document i (memory-mapped)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        with open(prefix + ".idx", "rb") as f:
            data = f.read()
        if data[:9] != MAGIC:
            raise ValueError(f"{prefix}.idx: not a Megatron MMIDIDX index (magic {data[:9]!r})")
        (version,) = struct.unpack_from("<Q", data, 9)
        if version != VERSION:
            raise ValueError(f"{prefix}.idx: index version {version}, expected {VERSION}")
        (code,) = struct.unpack_from("<B", data, 17)
        self.dtype = np.dtype(DTYPE_CODES[code]).newbyteorder("<")
        count, doc_count = struct.unpack_from("<QQ", data, 18)
        offset = 34
        self.lengths = np.frombuffer(data, dtype="<i4", count=count, offset=offset)
        offset += 4 * count
        self.pointers = np.frombuffer(data, dtype="<i8", count=count, offset=offset)
        offset += 8 * count
        self.doc_idx = np.frombuffer(data, dtype="<i8", count=doc_count, offset=offset)
        if offset + 8 * doc_count != len(data):
            raise ValueError(f"{prefix}.idx: {len(data)} bytes, the header says {offset + 8 * doc_count}")
        size = os.path.getsize(prefix + ".bin")
        expected = int(self.lengths.astype(np.int64).sum()) * self.dtype.itemsize
        if size != expected:
            raise ValueError(f"{prefix}.bin: {size} bytes, the index says {expected}")
        self.tokens = np.memmap(prefix + ".bin", dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)
        self.sources = np.fromfile(prefix + ".src", dtype=np.uint8) if os.path.exists(prefix + ".src") else None
        if self.sources is not None and len(self.sources) != count:
            raise ValueError(f"{prefix}.src: {len(self.sources)} entries for {count} documents")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.tokens[start : start + int(self.lengths[i])])

    def gather(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The concatenated tokens and the lengths of documents `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices].astype(np.int64)
        if not len(indices):
            return np.zeros(0, self.dtype), lengths
        starts = self.pointers[indices] // self.dtype.itemsize
        # One fancy-index over the memory map: positions of every token of every chosen document.
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        positions = offsets + np.arange(int(lengths.sum()), dtype=np.int64)
        return np.asarray(self.tokens[positions]), lengths
