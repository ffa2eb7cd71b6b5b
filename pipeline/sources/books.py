"""Books (LLaMA §2.1: "the Gutenberg Project ... and the Books3 section of ThePile ... We perform
deduplication at the book level, removing books with more than 90% content overlap.")

    read (one plain-text book per file, .txt or .txt.gz) -> gutenberg_boilerplate -> drop_empty
        -> minhash -> [LSH band census -> verified pairs -> clusters] -> near_dedup

- Encoding: a UTF-8 BOM, else the charset the Project Gutenberg header declares ('Character set
  encoding: ISO-8859-1'), else strict UTF-8, else cp1252. CRLF -> LF.
- gutenberg_boilerplate: the text between the '*** START OF (THE|THIS) PROJECT GUTENBERG EBOOK ...'
  and '*** END OF ...' lines is kept (the older '*END*THE SMALL PRINT!' header and 'End of (the)
  Project Gutenberg...' footer are recognised too); a book without the markers is kept whole and
  counted under notes. Title, author and language from the header go to metadata.
- near_dedup: "content overlap" is the Jaccard similarity of the books' sets of word 5-grams after
  normalisation (NFKD, accents and punctuation removed, lowercase), so that a re-wrapped edition or an
  ASCII vs Latin-1 edition of the same book compare equal where their words do. Books whose
  similarity is >= `threshold` (0.9) form clusters (transitively); in each cluster the book first
  in input order (`_ord`) stays, the others go as `near_duplicate`.

MinHash + LSH (datasketch), the parameters and why:
- shingles: word 5-grams. Whole books are tens of thousands of words; 5-grams are specific enough
  that two unrelated books share ~2-6 % of them (measured on the shared corpus) while a re-wrapped
  edition keeps ~92 %, and insensitive to line breaks.
- num_perm = 256: the signature estimates Jaccard with a standard error of sqrt(J(1-J)/256) =
  0.019 at J = 0.9 (0.027 with 128), which decides the pairs near the threshold.
- bands b = 16 of r = 16 rows: the probability that a pair with similarity s shares a bucket is
  1 - (1 - s^16)^16: 0.96 at s = 0.9, 0.997 at 0.95, 0.37 at 0.8, 0.0002 at 0.5. LSH is only a
  candidate generator, so it is tuned for recall at 0.9; each candidate pair is then verified on the
  full signature (estimated Jaccard >= 0.9), which removes the false positives. datasketch's own
  optimum for t = 0.9 (b = 9, r = 28) weighs false negatives and positives equally and finds only
  38 % of the pairs at exactly 0.9, which is why it is not used.
"""
from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import xxhash

from pipeline.accounting import StageStats
from pipeline.runs import expand_inputs
from pipeline.sources.common import DECOMPRESSION_ERRORS, BatchBuilder, DropEmpty, dead_letter, decode_text, open_maybe_compressed
from pipeline.step import Outcome, Step, TextStep

SOURCE = "books"
STAGES = ["read", "gutenberg_boilerplate", "drop_empty", "minhash", "near_dedup"]
GLOBAL = "minhash"
NUM_PERM = 256
BANDS = 16
ROWS = 16
SHINGLE_WORDS = 5
SEED = 1


@dataclasses.dataclass
class BooksConfig:
    threshold: float = 0.9
    num_perm: int = NUM_PERM
    bands: int = BANDS
    rows: int = ROWS
    shingle_words: int = SHINGLE_WORDS
    batch_records: int = 4  # books are large: a few per unit of parallel work

    def __post_init__(self):
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands}x{self.rows}) exceeds num_perm {self.num_perm}")

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [StripGutenberg(), DropEmpty(), MinHashBooks(self.num_perm, self.shingle_words)]

    def after(self) -> list:
        return [DropNearDuplicates()]


def expand(patterns: list[str]) -> list[str]:
    return expand_inputs(patterns)


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: BooksConfig) -> Iterator:
    builder = BatchBuilder(SOURCE, file_index, config.batch_records)
    # A book is one record: damaged compression drops the book (a fragment is not a book), one dead letter.
    chunks: list[bytes] = []
    try:
        with open_maybe_compressed(path) as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                chunks.append(chunk)
    except DECOMPRESSION_ERRORS as err:
        dead_letter(stats, dead, path, "unreadable_file", err, record=0, offset=sum(map(len, chunks)))
        return
    stats.docs_in += 1
    text, encoding = decode_text(b"".join(chunks))
    stats.docs_out += 1
    name = os.path.basename(path)
    meta = {"file": name, "encoding": encoding, **gutenberg_header_fields(text)}
    full = builder.add(0, name, text, metadata=meta)
    yield full or builder.flush()


_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*(?:\n[^\n]*?\*{3})?[^\n]*\n"
    r"|^\s*\*?\s*END\*?THE SMALL PRINT![^\n]*\n",
    re.I | re.M,
)
_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK"
    r"|^\s*End of (?:the )?Project Gutenberg'?s? ",
    re.I | re.M,
)
_FIELD = re.compile(r"^(Title|Author|Language|Release Date):\s*(.+)$", re.M)
_EBOOK_NO = re.compile(r"\[E-?Book #(\d+)\]", re.I)


def gutenberg_header_fields(text: str) -> dict:
    head = text[:10000]
    fields = {k.lower().replace(" ", "_"): v.strip() for k, v in _FIELD.findall(head)}
    m = _EBOOK_NO.search(head)
    if m:
        fields["gutenberg_id"] = m.group(1)
    return {k: fields[k] for k in sorted(fields)}


def strip_gutenberg(text: str) -> tuple[str, bool, bool]:
    """(body, header found, footer found)."""
    start = _START.search(text)
    body = text[start.end() :] if start else text
    end = _END.search(body)
    if end:
        body = body[: end.start()]
    return body.strip("\n"), start is not None, end is not None


@dataclasses.dataclass
class StripGutenberg(TextStep):
    name: str = "gutenberg_boilerplate"

    def transform(self, text, row, batch, notes):
        body, head, foot = strip_gutenberg(text)
        notes["header_removed" if head else "no_header_marker"] += 1
        notes["footer_removed" if foot else "no_footer_marker"] += 1
        return body, None


# --- MinHash -------------------------------------------------------------------------------------------

_NON_WORD = re.compile(r"[^\w]+")


def shingles(text: str, k: int = SHINGLE_WORDS) -> set[bytes]:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).lower()
    words = _NON_WORD.sub(" ", folded).split()
    if len(words) < k:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


def _hash32(data: bytes) -> int:
    return xxhash.xxh32_intdigest(data)


def signature(text: str, num_perm: int = NUM_PERM, k: int = SHINGLE_WORDS) -> np.ndarray:
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=SEED, hashfunc=_hash32)
    m.update_batch(sorted(shingles(text, k)))
    return m.hashvalues.astype(np.uint64)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def band_keys(sig: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> list[tuple[int, int]]:
    """(band index, 64-bit hash of the band's rows): two documents sharing a key are LSH candidates."""
    return [(b, xxhash.xxh3_64_intdigest(sig[b * rows : (b + 1) * rows].tobytes())) for b in range(bands)]


def verified_pairs(members: list[tuple[int, np.ndarray]], threshold: float) -> list[tuple[int, int]]:
    """Pairs (smaller _ord, larger _ord) of one LSH bucket whose estimated Jaccard reaches the threshold."""
    members = sorted(members, key=lambda m: m[0])
    out = []
    for i in range(len(members)):
        for j in range(i + 1, len(members)):
            if estimated_jaccard(members[i][1], members[j][1]) >= threshold:
                out.append((members[i][0], members[j][0]))
    return out


def duplicates_to_drop(pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union-find over similar pairs; in each cluster every member but the smallest `_ord` is dropped.
    Sorted uint64 array; independent of the order the pairs come in."""
    parent: dict[int, int] = {}

    def find(x):
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = min(ra, rb), max(ra, rb)
            parent[hi] = lo
            parent.setdefault(lo, lo)
    drop = [x for x in parent if find(x) != x]
    return np.array(sorted(drop), dtype=np.uint64)


@dataclasses.dataclass
class MinHashBooks(Step):
    """Adds `_minhash` (list<uint64>, num_perm values) per book."""

    num_perm: int = NUM_PERM
    shingle_words: int = SHINGLE_WORDS
    name: str = "minhash"

    def process(self, batch, notes):
        sigs = [signature(t, self.num_perm, self.shingle_words) for t in batch.column("text").to_pylist()]
        offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32) * self.num_perm)
        return Outcome(columns={"_minhash": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(sigs), pa.uint64()))})


def signatures_of(batch: pa.RecordBatch) -> list[tuple[int, np.ndarray]]:
    orders = batch.column("_ord").to_numpy(zero_copy_only=False)
    flat = batch.column("_minhash").flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
    n = len(flat) // max(batch.num_rows, 1)
    return [(int(orders[i]), flat[i * n : (i + 1) * n]) for i in range(batch.num_rows)]


@dataclasses.dataclass
class DropNearDuplicates(Step):
    """Drops the books listed in `drop` (sorted `_ord`s from `duplicates_to_drop`); needs `drop` set."""

    drop: np.ndarray | None = None
    name: str = "near_dedup"

    def process(self, batch, notes):
        assert self.drop is not None, "DropNearDuplicates.drop must be set"
        orders = batch.column("_ord").to_numpy(zero_copy_only=False).astype(np.uint64)
        return Outcome(drop=np.isin(orders, self.drop), reason="near_duplicate", remove=("_minhash",))


def config_from_args(args) -> BooksConfig:
    d = BooksConfig()
    return BooksConfig(threshold=args.near_dup_threshold if args.near_dup_threshold is not None else d.threshold,
                       batch_records=args.batch_records or d.batch_records)
