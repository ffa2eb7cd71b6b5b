"""The token-shard format: Megatron-LM's indexed dataset (`MMapIndexedDataset`, version 1) + manifest.json.

This module is the one reader and the one writer of the format (docs/token-shards.md): `corpusmill
tokenize` and `corpusmill mix` write with it, the mix, the statistics and the trainer read with it.

`PREFIX.bin` holds the tokens of every document back to back as little-endian uint16; `PREFIX.idx` is:

    9 bytes  b"MMIDIDX\\x00\\x00"
    <Q       version = 1
    <B       dtype code (8 = uint16)
    <Q       S, number of sequences
    <Q       D, number of document-index entries (S + 1)
    S x <i4  sequence lengths (tokens)
    S x <i8  byte offsets of each sequence in .bin
    D x <i8  document indices (0, 1, ..., S: one sequence per document)

`PREFIX.src` (optional) holds one uint8 per document: the index of its source in the manifest's
`source_names`. `manifest.json` lists the shards (prefixes relative to its folder), the tokenizer
and the per-source counts.

Reading: `read_index(idx_path)` memory-maps and checks an index (nothing is loaded up front);
`IndexedDataset(prefix)` adds the memory-mapped `.bin` and `.src`; `read_manifest(folder)` checks
the manifest's format. Every error is a `ShardFormatError` (a ValueError) naming the file.

Writing: `ShardWriter` streams one shard (tokens go to `.bin` as they come, through a temporary file
renamed into place on close; only the per-document lengths are kept in memory for `.idx`);
`write_manifest` writes manifest.json; `write_token_folder` writes a whole small folder (shards +
manifest) from token lists, for tests and small experiments.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import Sequence

import numpy as np

from pipeline.runs import atomic_output, atomic_write_bytes

FORMAT = "megatron-mmidx-v1"
DTYPE_NAME = "uint16"
MANIFEST_FILE = "manifest.json"
SHARD_EXTS = (".bin", ".idx", ".src")
MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_BYTES = 9 + 8 + 1 + 8 + 8
# Megatron's dtype codes (megatron/core/datasets/indexed_dataset.py DType).
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
UINT16_CODE = 8
MAX_VOCAB = 1 << 16


class ShardFormatError(ValueError):
    """A token shard or manifest that does not follow the format; the message names the file."""


# ---------------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class Index:
    """A checked `.idx`: per document its length in tokens and its byte offset in `.bin` (memory-mapped)."""

    path: str
    dtype: np.dtype
    lengths: np.ndarray  # <i4
    pointers: np.ndarray  # <i8

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum(dtype=np.int64))

    @property
    def bin_bytes(self) -> int:
        """The size `.bin` must have."""
        return self.tokens * self.dtype.itemsize


def read_index(idx_path: str) -> Index:
    """Memory-map and check a Megatron MMIDIDX v1 index: header, exact size, lengths, contiguous offsets."""
    idx_path = os.fspath(idx_path)
    size = os.path.getsize(idx_path)
    with open(idx_path, "rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES or head[:9] != MAGIC:
        raise ShardFormatError(f"{idx_path}: not a Megatron MMIDIDX index (bad magic)")
    (version,) = struct.unpack_from("<Q", head, 9)
    code = head[17]
    count, doc_count = struct.unpack_from("<QQ", head, 18)
    if version != VERSION:
        raise ShardFormatError(f"{idx_path}: index version {version}, expected {VERSION}")
    if code not in DTYPE_CODES:
        raise ShardFormatError(f"{idx_path}: unknown dtype code {code}")
    expected = HEADER_BYTES + 12 * count + 8 * doc_count
    if size != expected or doc_count != count + 1:
        raise ShardFormatError(f"{idx_path}: index size {size} bytes does not match its header "
                               f"({count} sequences, {doc_count} document entries: {expected} bytes)")
    dtype = np.dtype(DTYPE_CODES[code]).newbyteorder("<")
    if count == 0:
        return Index(idx_path, dtype, np.zeros(0, "<i4"), np.zeros(0, "<i8"))
    lengths = np.memmap(idx_path, dtype="<i4", mode="r", offset=HEADER_BYTES, shape=(count,))
    pointers = np.memmap(idx_path, dtype="<i8", mode="r", offset=HEADER_BYTES + 4 * count, shape=(count,))
    if int(lengths.min()) < 0:
        raise ShardFormatError(f"{idx_path}: negative sequence length")
    if pointers[0] != 0 or (np.diff(pointers) != dtype.itemsize * lengths[:-1].astype(np.int64)).any():
        raise ShardFormatError(f"{idx_path}: byte offsets are not contiguous")
    return Index(idx_path, dtype, lengths, pointers)


class IndexedDataset:
    """A shard: `len(ds)` documents, `ds[i]` the tokens of document i, `ds.sources` their source
    indices (None without `.src`); everything memory-mapped."""

    def __init__(self, prefix: str):
        self.prefix = prefix = os.fspath(prefix)
        index = read_index(prefix + ".idx")
        self.dtype, self.lengths, self.pointers = index.dtype, index.lengths, index.pointers
        size = os.path.getsize(prefix + ".bin")
        if size != index.bin_bytes:
            raise ShardFormatError(f"{prefix}.bin: {size} bytes, the index says {index.bin_bytes}")
        self.bin_bytes = size
        self.tokens = np.memmap(prefix + ".bin", dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)
        self.sources = None
        if os.path.exists(prefix + ".src"):
            n = os.path.getsize(prefix + ".src")
            if n != len(index):
                raise ShardFormatError(f"{prefix}.src: {n} entries for {len(index)} documents")
            self.sources = np.memmap(prefix + ".src", dtype=np.uint8, mode="r") if n else np.zeros(0, np.uint8)

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


def read_manifest(folder: str) -> dict:
    """FOLDER/manifest.json, checked to be this format (uint16 tokens)."""
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except ValueError as err:
        raise ShardFormatError(f"{path}: not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("dtype", DTYPE_NAME) != DTYPE_NAME:
        got = (manifest.get("format"), manifest.get("dtype")) if isinstance(manifest, dict) else (None, None)
        raise ShardFormatError(f"{path}: format {got[0]!r} dtype {got[1]!r}, expected {FORMAT!r} {DTYPE_NAME!r}")
    return manifest


def shard_prefixes(folder: str, manifest: dict) -> list[str]:
    """The manifest's shard prefixes as paths (the manifest's order: it fixes document numbering)."""
    return [os.path.join(os.fspath(folder), s["prefix"]) for s in manifest.get("shards", [])]


# ---------------------------------------------------------------------------------------------------
# Writing


class ShardWriter:
    """Write one `.bin`/`.idx` (+ `.src`) shard; use as a context manager, `add` token arrays in order."""

    def __init__(self, prefix: str, write_sources: bool = True):
        self.prefix = prefix = os.fspath(prefix)
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
        tokens = np.asarray(tokens)
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


def write_manifest(folder: str, manifest: dict) -> str:
    """FOLDER/manifest.json (indented, atomically); returns its path."""
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    atomic_write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path


def write_token_folder(folder: str, documents: list[Sequence[int]], tokenizer: dict, docs_per_shard: int = 0,
                       prefix: str = "mixed") -> str:
    """Documents (token lists, BOS/EOS included) as PREFIX-NNNNN shards without `.src` + manifest.json,
    for tests and small experiments (the real shards come from `corpusmill tokenize` / `mix`).
    `tokenizer` is the manifest's tokenizer entry (path, sha256, vocab_size, bos_id, eos_id)."""
    os.makedirs(folder, exist_ok=True)
    per_shard = docs_per_shard or max(1, len(documents))
    shards = []
    for n, first in enumerate(range(0, len(documents), per_shard)):
        docs = documents[first : first + per_shard]
        name = f"{prefix}-{n:05d}"
        with ShardWriter(os.path.join(folder, name), write_sources=False) as writer:
            tokens = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]) if docs else np.zeros(0, np.int64)
            writer.add(tokens, [len(d) for d in docs])
        shards.append({"prefix": name, "documents": writer.documents, "tokens": writer.tokens})
    manifest = {
        "format": FORMAT, "dtype": DTYPE_NAME, "tokenizer": dict(tokenizer), "source_names": [], "shards": shards, "sources": {},
        "total": {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards)},
    }  # fmt: skip
    return write_manifest(folder, manifest)
