"""Read WARC, WET and ARC files (gzip or not) into batches of raw records.

A *document record* is a WARC `response` (HTTP payload), a WET `conversion` (extracted text) or an
ARC response. Other records (warcinfo, request, metadata, revisit, resource) are not documents: they
are counted under `notes` by type, never silently. A record that cannot be read is a document that
is dropped as `malformed_record`, with a dead letter naming the file, the record's index and
offset, and the error; reading goes on with the next record where the format allows it:

- a file gzip'ed as one member instead of one per record (warcio refuses it) is read again as one
  decompressed stream;
- a record shorter than its Content-Length (truncated, clipped), or whose WARC block or payload
  digest does not match its bytes, is dropped as malformed;
- a corrupt gzip member or garbage where a record header should be ends that file's reading, and
  the dead letter says how many bytes were left unread.
"""
from __future__ import annotations

import gzip
import io
import zlib
from typing import Iterator

import pyarrow as pa
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from pipeline.accounting import StageStats
from pipeline.runs import open_input

RAW_SCHEMA = pa.schema(
    [
        pa.field("_ord", pa.uint64()),  # file_index << 32 | record index: a stable global order
        pa.field("_file", pa.string()),
        pa.field("_record", pa.int64()),
        pa.field("url", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("date", pa.string()),
        pa.field("record_type", pa.string()),  # response | conversion
        pa.field("http_status", pa.int32()),
        pa.field("content_type", pa.string()),  # media type from HTTP (or WARC for WET), lowercased
        pa.field("charset", pa.string()),  # declared charset, if any
        pa.field("payload", pa.binary()),
    ]
)

DOCUMENT_TYPES = {"response", "conversion"}
STAGE = "read"


def _parse_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [p.strip() for p in value.split(";")]
    media = parts[0].lower() or None
    charset = None
    for p in parts[1:]:
        if p.lower().startswith("charset="):
            charset = p.split("=", 1)[1].strip().strip("'\"").lower() or None
    return media, charset


def _read_payload(record) -> tuple[bytes, int]:
    """The payload, and how many bytes of the declared block were missing (0 if complete)."""
    payload = record.content_stream().read()
    missing = getattr(record.raw_stream, "limit", 0) or 0  # warcio's LimitReader counts down to 0
    return payload, int(missing)


def iter_raw_batches(
    path: str, file_index: int, stats: StageStats, dead_letters: list[dict], batch_records: int = 256
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (batch number, RecordBatch in RAW_SCHEMA) for one input file; fill `stats` and `dead_letters`."""
    rows: list[dict] = []
    batch_no = 0
    state = {"index": 0}

    def emit():
        nonlocal rows, batch_no
        if rows:
            batch = pa.RecordBatch.from_pylist(rows, schema=RAW_SCHEMA)
            rows = []
            batch_no += 1
            return batch_no - 1, batch
        return None

    def dead(reason: str, error: str, offset: int | None):
        stats.docs_in += 1
        stats.drop("malformed_record")
        dead_letters.append(
            {"file": path, "record": state["index"], "offset": offset, "reason": reason, "error": error[:500]}
        )

    for record, it, error in _records(path, state):
        if error is not None:
            dead(*error, None)
            state["index"] += 1
            continue
        rec_type = record.rec_type
        if rec_type not in DOCUMENT_TYPES:
            stats.notes[f"skipped_{rec_type}_records"] += 1
            state["index"] += 1
            continue
        try:
            payload, missing = _read_payload(record)
            offset = it.get_record_offset()  # only valid once the record has been read
        except Exception as err:  # broken chunked encoding, corrupt deflate inside a member...
            dead("unreadable_payload", f"{type(err).__name__}: {err}", None)
            state["index"] += 1
            continue
        if missing:
            dead("truncated_record", f"record is {missing} bytes shorter than its Content-Length", offset)
            state["index"] += 1
            continue
        checker = getattr(record, "digest_checker", None)
        if checker is not None and checker.passed is False:
            dead("digest_mismatch", "; ".join(checker.problems), offset)
            state["index"] += 1
            continue
        headers = record.rec_headers
        status = None
        if rec_type == "response" and record.http_headers is not None:
            media, charset = _parse_content_type(record.http_headers.get_header("Content-Type"))
            try:
                status = int(record.http_headers.get_statuscode() or 0) or None
            except ValueError:
                status = None
        else:
            media, charset = _parse_content_type(headers.get_header("Content-Type"))
            if rec_type == "conversion":
                media = "text/plain"
        stats.docs_in += 1
        stats.docs_out += 1
        rows.append(
            {
                "_ord": (file_index << 32) | state["index"],
                "_file": path,
                "_record": state["index"],
                "url": headers.get_header("WARC-Target-URI"),
                "record_id": headers.get_header("WARC-Record-ID"),
                "date": headers.get_header("WARC-Date"),
                "record_type": rec_type,
                "http_status": status,
                "content_type": media,
                "charset": charset,
                "payload": payload,
            }
        )
        state["index"] += 1
        if len(rows) >= batch_records:
            yield emit()
    last = emit()
    if last:
        yield last


class _QuietArchiveIterator(ArchiveIterator):
    # warcio writes a warning to stderr for a record not followed by a blank line; the digest check
    # below catches the records whose Content-Length is off, so the warning is noise here.
    INC_RECORD = ""


def _records(path: str, state: dict):
    """(record, iterator, None) per record, or (None, None, (reason, message)) where reading fails."""
    with open_input(path) as raw:
        data = raw.read()
    yielded = 0
    try:
        it = _QuietArchiveIterator(io.BytesIO(data), arc2warc=True, check_digests=True)
        for record in it:
            yielded += 1
            yield record, it, None
        return
    except ArchiveLoadFailed as err:
        message = str(err).strip()
        if "non-chunked gzip" not in message:
            yield None, None, ("unreadable_archive", f"{message.splitlines()[0] if message else 'ArchiveLoadFailed'}")
            return
    except (zlib.error, EOFError, OSError, ValueError) as err:
        yield None, None, ("corrupt_compression", f"{type(err).__name__}: {err}")
        return
    # The whole file is one gzip member: decompress it and read it as an uncompressed archive,
    # skipping the records already read.
    try:
        plain = gzip.decompress(data)
    except (zlib.error, EOFError, OSError) as err:
        yield None, None, ("corrupt_compression", f"{type(err).__name__}: {err}")
        return
    skip = yielded
    try:
        it = _QuietArchiveIterator(io.BytesIO(plain), arc2warc=True, check_digests=True)
        for record in it:
            if skip:
                skip -= 1
                record.content_stream().read()
                continue
            yield record, it, None
    except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError) as err:
        yield None, None, ("unreadable_archive", f"{type(err).__name__}: {str(err).strip()[:200]}")
