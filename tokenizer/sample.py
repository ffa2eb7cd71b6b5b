"""A deterministic sample of training text for the tokenizer, in the mix's proportions.

Each source gets `sample_chars x share` characters. Documents are ranked by a seeded 64-bit hash of
their id, so the choice depends on the seed and the documents only (not on file order or workers):
a source is taken whole `copies` times (a source smaller than its budget is repeated, as the mix
repeats it), and the remaining budget is filled with the lowest-ranked documents, up to the first
one that reaches it (`threshold`: documents whose rank is <= it get one more copy).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash


def document_ranks(ids: pa.Array, seed: int) -> np.ndarray:
    """uint64 rank of each document id (seeded xxh64)."""
    h = xxhash.xxh64_intdigest
    return np.fromiter((h(i.encode("utf-8"), seed) for i in ids.to_pylist()), dtype=np.uint64, count=len(ids))


def char_lengths(texts: pa.Array) -> np.ndarray:
    return pc.utf8_length(texts.fill_null("")).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class SourceSelection:
    copies: int  # every document is taken this many times...
    threshold: int  # ...and once more if its rank <= threshold (-1: none)
    budget: int
    available_chars: int

    def copies_of(self, ranks: np.ndarray) -> np.ndarray:
        if self.threshold < 0:
            return np.full(len(ranks), self.copies, dtype=np.int64)
        return self.copies + (ranks <= np.uint64(self.threshold)).astype(np.int64)


def select(ranks: np.ndarray, lengths: np.ndarray, budget: int) -> SourceSelection:
    """The selection that gives `budget` characters (whole documents, the last one may pass it)."""
    total = int(lengths.sum())
    if total == 0:
        return SourceSelection(0, -1, budget, 0)
    copies, remainder = divmod(int(budget), total)
    if remainder == 0:
        return SourceSelection(copies, -1, budget, total)
    order = np.argsort(ranks, kind="stable")
    reach = int(np.searchsorted(np.cumsum(lengths[order]), remainder, side="left"))
    return SourceSelection(copies, int(ranks[order[min(reach, len(order) - 1)]]), budget, total)


def training_blocks(texts: pa.Array, max_sentence_bytes: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Each document's training text: its non-empty lines ("\\r" stripped), each ending in "\\n", without
    the lines over `max_sentence_bytes` (SentencePiece would skip them), as large_binary; and per
    document the lines kept and the lines left out for their length. Vectorised (Arrow kernels)."""
    lists = pc.split_pattern(texts.fill_null(""), "\n")
    lines = pc.utf8_rtrim(lists.flatten(), characters="\r")
    nbytes = pc.binary_length(lines).to_numpy(zero_copy_only=False)
    keep = (nbytes > 0) & (nbytes <= max_sentence_bytes)
    counts = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    parent = np.repeat(np.arange(len(texts)), counts)
    kept = np.bincount(parent[keep], minlength=len(texts)).astype(np.int64)
    too_long = np.bincount(parent[nbytes > max_sentence_bytes], minlength=len(texts)).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(kept)]).astype(np.int64), pa.int64())
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, lines.filter(pa.array(keep)).cast(pa.large_string())),
                            pa.scalar("\n", pa.large_string()))
    newline, empty = pa.scalar("\n", pa.large_string()), pa.scalar("", pa.large_string())
    blocks = pc.if_else(pa.array(kept > 0), pc.binary_join_element_wise(joined, empty, newline), empty)
    return blocks.cast(pa.large_binary()), kept, too_long
