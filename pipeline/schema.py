"""The one document schema that every corpusmill job writes.

Columns that a job does not compute are null (e.g. `perplexity` for GitHub files). Source-specific
fields (a WARC record id, a repository's licence, a StackExchange site) go in `metadata`, a JSON
object, so that every shard of every source has exactly the same Arrow schema and can be read as
one dataset.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

SOURCES = ("commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange")

DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable: see document_id()
        pa.field("source", pa.string(), nullable=False),  # one of SOURCES
        pa.field("url", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("language", pa.string()),  # ISO 639 code from lid.176, e.g. "en"
        pa.field("language_score", pa.float32()),
        pa.field("perplexity", pa.float32()),  # KenLM perplexity, CCNet's formula
        pa.field("bucket", pa.string()),  # head / middle / tail (CCNet perplexity buckets)
        pa.field("quality_score", pa.float32()),  # P(wikipedia) from the linear quality classifier
        pa.field("original_nlines", pa.int32()),  # lines before dedup
        pa.field("original_length", pa.int32()),  # characters before dedup
        pa.field("nlines", pa.int32()),  # lines kept
        pa.field("metadata", pa.string()),  # JSON object, source-specific
    ]
)

# `_ord` = file index << ORD_FILE_SHIFT | position in the file (a byte offset, or a record number):
# the stable global order of every job; files up to 1 TiB, 16M files.
ORD_FILE_SHIFT = 40

# A document batch between steps: the document fields known before scoring, plus `_ord`
# (file index << N | position in the file), the stable global order every job sorts and breaks ties by.
WORK_FIELDS = [
    pa.field("_ord", pa.uint64()),
    pa.field("id", pa.string()),
    pa.field("source", pa.string()),
    pa.field("url", pa.string()),
    pa.field("text", pa.string()),
    pa.field("metadata", pa.string()),
    pa.field("original_length", pa.int32()),
    pa.field("original_nlines", pa.int32()),
    pa.field("nlines", pa.int32()),
]


def document_id(source: str, native_id: str) -> str:
    """A stable id: 128 bits of SHA-1 over the source and the record's own id (WARC-Record-ID, path...)."""
    return hashlib.sha1(f"{source}\x00{native_id}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def to_document_table(table: pa.Table) -> pa.Table:
    """Project a working table (which may carry extra `_`-prefixed columns) onto the document schema."""
    columns = []
    for field in DOCUMENT_SCHEMA:
        if field.name in table.schema.names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=DOCUMENT_SCHEMA)
