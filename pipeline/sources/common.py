"""What the six non-web source jobs share: turning records into document batches, decoding text,
parsing XML safely, and the two global dedup kinds (exact by content hash, near-duplicate by
MinHash LSH) as plain functions that the Beam job and the in-process executor both call.

Every source's reader yields `(batch_number, RecordBatch)` whose rows carry the document columns
(`id`, `source`, `url`, `text`, `metadata`, `original_length`, `original_nlines`, `nlines`) plus
`_ord` (file_index << ORD_FILE_SHIFT | record index: a global order independent of the number of workers) and
source-specific `_`-prefixed working columns that steps consume and `to_document_table` drops.
"""
from __future__ import annotations

import bz2
import codecs
import dataclasses
import gzip
import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.runs import InputError, open_input
from pipeline.schema import ORD_FILE_SHIFT, WORK_FIELDS, document_id
from pipeline.step import Outcome, Step

BASE_FIELDS = WORK_FIELDS


class BatchBuilder:
    """Collects documents of one input file into RecordBatches of `batch_records` rows."""

    def __init__(self, source: str, file_index: int, batch_records: int, extra_fields: list[pa.Field] = ()):
        self.source, self.file_index, self.batch_records = source, file_index, batch_records
        self.schema = pa.schema(BASE_FIELDS + list(extra_fields))
        self.rows: list[dict] = []
        self.batch_no = 0

    def add(self, record: int, native_id: str, text: str, url: str | None = None, metadata: dict | None = None, **extra):
        """Add one document; returns a full batch `(batch_no, batch)` when one is ready, else None."""
        n = text.count("\n") + 1 if text else 0  # as pipeline.step.line_counts
        self.rows.append(
            {
                "_ord": (self.file_index << ORD_FILE_SHIFT) | record,
                "id": document_id(self.source, native_id),
                "source": self.source,
                "url": url,
                "text": text,
                "metadata": json.dumps(metadata or {}, sort_keys=True, ensure_ascii=False),
                "original_length": len(text),
                "original_nlines": n,
                "nlines": n,
                **extra,
            }
        )
        return self.flush() if len(self.rows) >= self.batch_records else None

    def flush(self):
        if not self.rows:
            return None
        batch = pa.RecordBatch.from_pylist(self.rows, schema=self.schema)
        self.rows = []
        self.batch_no += 1
        return self.batch_no - 1, batch


def open_maybe_compressed(path: str):
    """A binary stream of the file's content, decompressed on the fly for .gz and .bz2."""
    if "://" not in path:
        raw = open(path, "rb")  # buffered: supports line iteration, unlike pyarrow's raw streams
    else:
        raw = io.BytesIO(open_input(path).read())
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if path.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="rb")
    return raw


_DECLARED_CHARSET = re.compile(rb"(?:Character set encoding|charset)\s*[:=]\s*([A-Za-z0-9_.:-]+)", re.I)


def decode_text(data: bytes, hint: str | None = None) -> tuple[str, str]:
    """Bytes -> (text, encoding used): a BOM wins, then a declared charset in the first 8 KB (Project
    Gutenberg's 'Character set encoding: ISO-8859-1', a LaTeX/HTML 'charset='), then strict UTF-8,
    then cp1252 (a superset of Latin-1 for the printable range; never fails). Newlines -> \\n."""
    if data.startswith(codecs.BOM_UTF8):
        text, enc = data[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    else:
        text = enc = None
        m = _DECLARED_CHARSET.search(data[:8192]) if hint is None else None
        for candidate in [hint] if hint else ([m.group(1).decode("ascii").lower()] if m else []):
            try:
                codecs.lookup(candidate)
                text, enc = data.decode(candidate), candidate
                break
            except (LookupError, UnicodeDecodeError):
                pass
        if text is None:
            try:
                text, enc = data.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, enc = data.decode("cp1252", errors="replace"), "cp1252"
    return text.replace("\r\n", "\n").replace("\r", "\n"), enc


# --- XML, safely -----------------------------------------------------------------------------------

def safe_iterparse(stream, path: str, events=("end",)):
    """`iterparse` that refuses entity declarations (billion laughs, quadratic blowup) and external
    entities/DTDs, raising an InputError that names the file. MediaWiki and StackExchange dumps
    declare no entities, so nothing legitimate is refused."""
    import defusedxml
    import defusedxml.ElementTree as DET
    from xml.etree.ElementTree import ParseError

    try:
        yield from DET.iterparse(stream, events=events, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as err:
        raise InputError(f"{path}: refused unsafe XML ({type(err).__name__}: {err}); entity declarations and external references are not allowed") from err
    except ParseError as err:
        raise InputError(f"{path}: malformed XML: {err}") from err


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --- steps every source uses ---------------------------------------------------------------------

@dataclasses.dataclass
class DropEmpty(Step):
    """Drops documents whose text is empty or whitespace after the previous steps."""

    min_chars: int = 1
    reason: str = "empty"
    name: str = "drop_empty"

    def process(self, batch, notes):
        stripped = pc.utf8_length(pc.utf8_trim_whitespace(batch.column("text"))).to_numpy(zero_copy_only=False)
        return Outcome(drop=stripped < self.min_chars, reason=self.reason)


# --- exact dedup: one hash per document, first by `_ord` wins ---------------------------------------

@dataclasses.dataclass
class HashContent(Step):
    """Adds `_line_hashes` holding ONE 64-bit xxh3 hash of the whole text, so that the line census of
    `pipeline.dedup` (a reduction per hash range keeping the smallest `_ord` and a shared flag) doubles
    as a file-level census: a 'line' here is the whole document."""

    name: str = "hash_content"

    def process(self, batch, notes):
        import xxhash

        text = batch.column("text")
        hashes = np.fromiter(
            (xxhash.xxh3_64_intdigest(b) for b in text.cast(pa.binary()).to_pylist()), dtype=np.uint64, count=batch.num_rows
        )
        offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32))
        return Outcome(columns={"_line_hashes": pa.ListArray.from_arrays(offsets, pa.array(hashes, pa.uint64()))})


@dataclasses.dataclass
class ApplyExactDedup(Step):
    """Drops a document whose content hash the census saw in an earlier document (smaller `_ord`)."""

    table: object = None  # pipeline.dedup.DuplicateTable
    reason: str = "duplicate"
    name: str = "exact_dedup"

    def process(self, batch, notes):
        hashes = batch.column("_line_hashes").flatten().to_numpy(zero_copy_only=False).astype(np.uint64)
        orders = batch.column("_ord").to_numpy(zero_copy_only=False).astype(np.uint64)
        dup, first = self.table.lookup(hashes)
        return Outcome(drop=dup & (first != orders), reason=self.reason, remove=("_line_hashes",))
