"""A deterministic sample of training text for the tokenizer, in the mix's proportions.

Each source gets `sample_chars x share` characters. Documents are ranked by a seeded 64-bit hash of
their id, so the choice depends on the seed and the documents only (not on file order or workers):
a source is taken whole `copies` times (a source smaller than its budget is repeated, as the mix
repeats it), and the remaining budget is filled with the lowest-ranked documents, up to the first
one that reaches it (`threshold`: documents whose rank is <= it get one more copy).

One pass over the documents: each file's non-empty documents become `Candidates` (rank, global
order, length, training lines); merging candidates of one source keeps, once their characters reach
the budget, only the rank prefix that reaches it. A document outside the prefix of a subset is
outside the prefix of the whole source (its lower-ranked documents already hold the budget), so the
merged candidates, in any merge order, hold every document the selection can take, and at most
about one budget of text per source.
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


def select(ranks: np.ndarray, lengths: np.ndarray, budget: int, total: int | None = None) -> SourceSelection:
    """The selection that gives `budget` characters (whole documents, the last one may pass it).

    `total`: the source's characters when `ranks`/`lengths` are only its candidates (see `Candidates`).
    """
    total = int(lengths.sum()) if total is None else int(total)
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


@dataclasses.dataclass
class Candidates:
    """A source's documents that the selection may take, and the counts of all its documents."""

    budget: int = 0  # the source's budget (characters)
    docs: int = 0  # documents read
    empty: int = 0  # of which without text
    chars: int = 0  # characters of all documents read
    ranks: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))
    order: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint64))  # file_index << 32 | row
    lengths: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    lines: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    too_long: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    blocks: pa.Array = dataclasses.field(default_factory=lambda: pa.array([], pa.large_binary()))  # training text

    @classmethod
    def of_file(cls, file_index: int, ranks: np.ndarray, texts: pa.Array, lengths: np.ndarray, budget: int,
                max_sentence_bytes: int) -> "Candidates":
        """The candidates of one file; training blocks are made for the documents kept only."""
        nonempty = np.flatnonzero(lengths > 0)
        found = cls(budget=int(budget), docs=len(lengths), empty=len(lengths) - len(nonempty), chars=int(lengths.sum()),
                    ranks=ranks[nonempty], order=(np.uint64(file_index) << np.uint64(32)) | nonempty.astype(np.uint64),
                    lengths=lengths[nonempty])
        keep = np.sort(found._prefix())  # file order
        rows = nonempty[keep]
        whole = len(rows) == len(texts)  # every document kept: no copy of the texts
        blocks, lines, too_long = training_blocks(texts if whole else texts.take(pa.array(rows)), max_sentence_bytes)
        return dataclasses.replace(found, ranks=found.ranks[keep], order=found.order[keep], lengths=found.lengths[keep],
                                   lines=lines, too_long=too_long, blocks=blocks)

    def _prefix(self) -> np.ndarray:
        """Indices (rank order) of the documents that can be selected: all while the characters seen
        stay under the budget, else the rank prefix that reaches it (and ties of its last rank)."""
        order = np.lexsort((self.order, self.ranks))
        if self.chars < self.budget:
            return order
        reach = int(np.searchsorted(np.cumsum(self.lengths[order]), self.budget, side="left"))
        if reach >= len(order):
            return order
        last = self.ranks[order[reach]]
        return order[self.ranks[order] <= last]

    def merge(self, other: "Candidates") -> "Candidates":
        assert self.budget == other.budget, (self.budget, other.budget)
        both = Candidates(self.budget, self.docs + other.docs, self.empty + other.empty, self.chars + other.chars,
                          np.concatenate([self.ranks, other.ranks]), np.concatenate([self.order, other.order]),
                          np.concatenate([self.lengths, other.lengths]), np.concatenate([self.lines, other.lines]),
                          np.concatenate([self.too_long, other.too_long]), pa.concat_arrays([self.blocks, other.blocks]))
        return both if both.chars < both.budget else both.take(both._prefix())

    def take(self, index: np.ndarray) -> "Candidates":
        return dataclasses.replace(self, ranks=self.ranks[index], order=self.order[index], lengths=self.lengths[index],
                                   lines=self.lines[index], too_long=self.too_long[index],
                                   blocks=self.blocks.take(pa.array(index, pa.int64())))

    def selection(self) -> SourceSelection:
        return select(self.ranks, self.lengths, self.budget, total=self.chars)
