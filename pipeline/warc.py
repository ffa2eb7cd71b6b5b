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

import contextlib
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


def iter_raw_batches(
    path: str, file_index: int, stats: StageStats, dead_letters: list[dict], batch_records: int = 256,
    part: int = 0, parts: int = 1,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (batch number, RecordBatch in RAW_SCHEMA) for one input file; fill `stats` and `dead_letters`.

    With `parts` > 1, only the records whose index in the file is `part` modulo `parts` are taken (and
    counted), so that several workers can share one file; the parts together are the whole file.
    """
    rows: list[dict] = []
    batch_no = 0
    state = {"index": 0}

    def emit():
        nonlocal rows, batch_no
        if rows:
            batch = pa.RecordBatch.from_pylist(rows, schema=RAW_SCHEMA)
            rows = []
            batch_no += 1
            return (part << 20) | (batch_no - 1), batch
        return None

    def dead(reason: str, error: str, offset: int | None):
        stats.docs_in += 1
        stats.drop("malformed_record")
        dead_letters.append(
            {"file": path, "record": state["index"], "offset": offset, "reason": reason, "error": error[:500]}
        )

    for record, payload, offset, error in _records(path, lambda index: index % parts == part):
        if state["index"] % parts != part:
            state["index"] += 1
            continue
        if record is not None and record.rec_type not in DOCUMENT_TYPES:
            # Not a document (request, metadata, revisit...), well-formed or not: noted, not counted.
            stats.notes[f"skipped_{record.rec_type}_records"] += 1
            state["index"] += 1
            continue
        if error is not None:
            dead(*error, offset)
            state["index"] += 1
            continue
        rec_type = record.rec_type
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


GZIP_MEMBER = b"\x1f\x8b\x08"
_READ_ERRORS = (zlib.error, EOFError, OSError, ValueError)


def _records(path: str, wanted=lambda index: True):
    """Per record: (record, payload, offset, None) read and checked, or (None, None, offset, (reason, message)).

    Records whose index is not `wanted` are not digest-checked (the caller skips them).
    After a failure inside a gzip'ed file, reading resumes at the next gzip member header.
    """
    index = 0
    with open_input(path) as raw:
        data = raw.read()
    gzipped = data[:2] == GZIP_MEMBER[:2]
    pos = 0
    while True:
        it = _QuietArchiveIterator(io.BytesIO(data[pos:]), arc2warc=True, check_digests=True)
        records = iter(it)
        end, count = 0, 0
        try:
            while True:
                take = wanted(index)
                it.check_digests = take  # read per record by warcio: no digests for records not taken
                with contextlib.redirect_stderr(_DISCARD):  # warcio prints zlib errors and carries on
                    record = next(records, None)
                    if record is None:
                        return
                    # Read even a record not taken: a truncated gzip member must be seen to resume after it.
                    payload = record.content_stream().read()
                offset = pos + it.get_record_offset()
                problem = _check(record)
                count += 1
                index += 1
                yield record, payload, offset, problem
                if problem is not None and gzipped:
                    # warcio reads nothing more after a broken member: resume at the next one.
                    end = offset - pos
                    break
                end = offset - pos + it.get_record_length()
            resume = data.find(GZIP_MEMBER, pos + end + 1)
            if resume < 0:
                return
            pos = resume
            continue
        except ArchiveLoadFailed as err:
            message = str(err).strip()
            if "non-chunked gzip" in message:
                yield from _records_of_single_member(data, skip=count)
                return
            failure = ("unreadable_archive", message.splitlines()[0] if message else "ArchiveLoadFailed")
        except _READ_ERRORS as err:
            failure = ("corrupt_compression" if gzipped else "unreadable_archive", f"{type(err).__name__}: {err}")
        index += 1
        yield None, None, pos + end, failure
        resume = data.find(GZIP_MEMBER, pos + end + 1) if gzipped else -1
        if resume < 0:
            return
        pos = resume


class _Discard(io.TextIOBase):
    def write(self, s):
        return len(s)


_DISCARD = _Discard()


def _check(record) -> tuple[str, str] | None:
    """Why a fully read record is malformed, or None."""
    missing = getattr(record.raw_stream, "limit", 0) or 0  # warcio's LimitReader counts down to 0
    if missing:
        return "truncated_record", f"record is {missing} bytes shorter than its Content-Length"
    checker = getattr(record, "digest_checker", None)
    if checker is not None and checker.passed is False:
        return "digest_mismatch", "; ".join(checker.problems)
    return None


def _records_of_single_member(data: bytes, skip: int):
    """A file gzip'ed as one member (warcio refuses it): read it decompressed, after the `skip` records read."""
    try:
        plain = gzip.decompress(data)
    except _READ_ERRORS as err:
        yield None, None, 0, ("corrupt_compression", f"{type(err).__name__}: {err}")
        return
    it = _QuietArchiveIterator(io.BytesIO(plain), arc2warc=True, check_digests=True)
    try:
        for n, record in enumerate(it):
            payload = record.content_stream().read()
            if n >= skip:
                yield record, payload, it.get_record_offset(), _check(record)
    except (ArchiveLoadFailed,) + _READ_ERRORS as err:
        yield None, None, None, ("unreadable_archive", f"{type(err).__name__}: {str(err).strip()[:200]}")
