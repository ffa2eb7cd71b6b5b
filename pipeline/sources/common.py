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
import io
import json
import re
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.accounting import StageStats
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
    """A binary stream of the file's content, decompressed on the fly for .gz and .bz2 (concatenated
    members included). After damage it gives every byte that can still be decompressed, then raises
    (`DECOMPRESSION_ERRORS`)."""
    if "://" not in path:
        raw = open(path, "rb")  # buffered: supports line iteration, unlike pyarrow's raw streams
    else:
        raw = io.BytesIO(open_input(path).read())
    if path.endswith((".gz", ".bz2")):
        return io.BufferedReader(_Decompressed(raw, "gz" if path.endswith(".gz") else "bz2"))
    return raw


class _Decompressed(io.RawIOBase):
    """gzip or bz2 decompressed as it is read. gzip.GzipFile and bz2.BZ2File drop the output of the
    read that meets damage (up to a bz2 block, 900 kB, of good text); here, the input chunk holding the
    damage is decompressed again a byte at a time, so that the reader gets every good byte first."""

    CHUNK = 1 << 16

    def __init__(self, raw, kind: str):
        self.raw, self.kind = raw, kind
        self.pending, self.error, self.done = b"", None, False
        self._member(0)

    def _member(self, start: int) -> None:
        self.start, self.fed, self.out = start, 0, 0  # where this member starts; bytes fed; bytes given
        self.d = zlib.decompressobj(31) if self.kind == "gz" else bz2.BZ2Decompressor()

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()
        super().close()

    def readinto(self, b) -> int:
        while not self.pending and not self.done:
            self._step()
        if not self.pending:
            if self.error is not None:
                err, self.error = self.error, None
                raise err
            return 0
        n = min(len(b), len(self.pending))
        b[:n], self.pending = self.pending[:n], self.pending[n:]
        return n

    def _step(self) -> None:
        pos = self.start + self.fed
        self.raw.seek(pos)
        chunk = self.raw.read(self.CHUNK)
        if not chunk:
            self.done = True
            if self.fed:  # a member that started and never ended
                self.error = EOFError(f"the compressed stream ends {self.out} bytes into a member, before its end")
            return
        if not self.fed and self.kind == "gz" and not chunk.strip(b"\0"):
            self._member(pos + len(chunk))  # zero padding after the last member, as gzip allows
            return
        try:
            out = self.d.decompress(chunk)
        except DECOMPRESSION_ERRORS as err:
            self.pending, self.error, self.done = self._salvage(chunk), err, True
            return
        self.fed += len(chunk)
        self.out += len(out)
        self.pending = out
        if self.d.eof:  # the member ended inside this chunk: the next one starts after it
            self._member(pos + len(chunk) - len(self.d.unused_data))

    def _salvage(self, chunk: bytes) -> bytes:
        """The output of `chunk` up to its first damaged byte (a fresh decompressor over the member)."""
        d = zlib.decompressobj(31) if self.kind == "gz" else bz2.BZ2Decompressor()
        self.raw.seek(self.start)
        left = self.fed
        while left:
            piece = self.raw.read(min(self.CHUNK, left))
            d.decompress(piece)  # decompressed fine the first time
            left -= len(piece)
        out = []
        for i in range(len(chunk)):
            try:
                out.append(d.decompress(chunk[i : i + 1]))
            except DECOMPRESSION_ERRORS:
                break
            if d.eof:
                break
        return b"".join(out)


# What a gzip or bz2 stream raises where its bytes are damaged: cut short (EOFError), a bad deflate
# block (zlib.error), a bad header, CRC or bz2 block (OSError, gzip.BadGzipFile included).
DECOMPRESSION_ERRORS = (EOFError, zlib.error, OSError)


def dead_letter(stats: StageStats, dead: list[dict], path: str, reason: str, error, **where) -> None:
    """One unit of damage (a record, or the unreadable rest of a file): read, dropped as `reason`, and a
    dead letter naming the file and where (`record`, `offset`)."""
    stats.docs_in += 1
    stats.drop(reason)
    message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    dead.append({"file": path, **where, "reason": reason, "error": message.strip()[:500]})


def damage_reason(offset: int) -> str:
    """`unreadable_file` when not one byte could be read (not of its format at all), else
    `corrupt_compression` (the rest of the file after the damage)."""
    return "unreadable_file" if offset == 0 else "corrupt_compression"


def lines_until_damage(stream, path: str, stats: StageStats, dead: list[dict]):
    """(record number, line) of a line-oriented file. A decompression error ends the file: what was read
    before it is kept, the rest is one dead letter with the record number and the decompressed byte
    offset where reading stopped (a deflate or bz2 stream cannot be resumed after a damaged block)."""
    record = offset = 0
    lines = iter(stream)
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except DECOMPRESSION_ERRORS as err:
            dead_letter(stats, dead, path, damage_reason(offset), err, record=record, offset=offset)
            return
        yield record, raw
        record += 1
        offset += len(raw)


class FileOfOtherFormat:
    """Turns a file none of whose records was of the format (a text file given as JSON lines) into ONE
    dead letter `unreadable_file` instead of one per line. Made before reading, `close`d after."""

    def __init__(self, stats: StageStats, dead: list[dict], path: str, reason: str = "malformed_record"):
        self.stats, self.dead, self.path, self.reason = stats, dead, path, reason
        self.docs_in, self.docs_out, self.dropped, self.letters = stats.docs_in, stats.docs_out, stats.dropped[reason], len(dead)

    def close(self, what: str) -> None:
        bad = self.stats.dropped[self.reason] - self.dropped
        if self.stats.docs_out > self.docs_out or bad < 2 or bad != self.stats.docs_in - self.docs_in:
            return
        self.stats.docs_in -= bad
        self.stats.dropped[self.reason] -= bad
        if not self.stats.dropped[self.reason]:
            del self.stats.dropped[self.reason]
        first = self.dead[self.letters]
        del self.dead[self.letters :]
        dead_letter(self.stats, self.dead, self.path, "unreadable_file", f"not {what}: none of its {bad} records is ({first['error']})", record=0)


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


_XML_DECLARATION = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*(<\?xml[^>]*\?>)")
MAX_XML_HEADER = 64 << 20  # bytes before the first record: a dump's <siteinfo> is a few KB


class _Stream:
    """A decompressed stream read in blocks into a buffer; a decompression error ends it (`error`)."""

    def __init__(self, stream, block: int):
        self.stream, self.block = stream, block
        self.buf, self.base, self.eof, self.error = b"", 0, False, None  # base: offset of buf[0]

    def fill(self) -> None:
        try:
            # read1: what one decompression step gives; read(n) would lose it when the step after fails.
            chunk = self.stream.read1(self.block) if hasattr(self.stream, "read1") else self.stream.read(self.block)
        except DECOMPRESSION_ERRORS as err:
            chunk, self.error = b"", err
        self.eof = not chunk
        self.buf += chunk

    def drop_before(self, pos: int) -> None:
        self.buf, self.base = self.buf[pos:], self.base + pos


def xml_records(stream, path: str, root: str, tag: str, stats: StageStats, dead: list[dict], block: int = 1 << 20):
    """An XML dump (<root> header, then one <tag> element per record: MediaWiki <page>s, StackExchange
    <row>s) as `("header", root element)` once, then `("record", record number, element)` per record,
    each parsed on its own so that damage costs only the records it touches:

    - a record that does not parse is a `malformed_record` dead letter (number, byte offset in the
      decompressed stream) and reading goes on with the next record;
    - a decompression error ends the file: the records before it are kept, the rest is one dead letter;
    - a file whose header is not `<root>` XML, or with no record tag in its first 64 MB, is one dead
      letter `unreadable_file`; a root that is never closed (a truncated file) is one `truncated_file`;
    - entity declarations and external references anywhere raise an InputError naming the file.

    Records are found by their start tag in the raw bytes: in well-formed XML '<' never stands for
    itself inside text or attribute values, so `<tag` only ever begins an element."""
    import defusedxml
    import defusedxml.ElementTree as DET
    from xml.etree.ElementTree import ParseError

    start = re.compile(b"<" + tag.encode() + rb"[\s/>]")
    end = re.compile(b"</" + root.encode() + rb"\s*>")
    data = _Stream(stream, block)

    def parse(xml: bytes):
        try:
            return DET.fromstring(xml, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        except defusedxml.DefusedXmlException as err:
            raise InputError(f"{path}: refused unsafe XML ({type(err).__name__}: {err}); entity declarations and external references are not allowed") from err

    while not (m := start.search(data.buf)) and not data.eof and len(data.buf) < MAX_XML_HEADER:
        data.fill()
    header = data.buf[: m.start()] if m else data.buf
    closed = end.search(header)
    try:
        head = parse(header[: closed.start()] if closed else header + b"</" + root.encode() + b">")
        problem = None if local_name(head.tag) == root else f"not a <{root}> XML file (root element <{local_name(head.tag)}>)"
    except ParseError as err:
        problem = f"not a <{root}> XML file: {err}" + (f" ({type(data.error).__name__}: {data.error})" if data.error else "")
    if problem is None and not m and not closed:
        problem = f"no <{tag}> element and no closing </{root}>" + (f" ({type(data.error).__name__}: {data.error})" if data.error else "")
    if problem is not None:
        dead_letter(stats, dead, path, "unreadable_file", problem, record=0, offset=0)
        return
    yield "header", head
    if not m:
        return
    declaration = _XML_DECLARATION.match(header)
    declaration = declaration.group(1) if declaration else b""
    pos, record, searched = m.start(), 0, m.start() + 1
    while True:
        nxt = start.search(data.buf, searched)
        stop = end.search(data.buf, pos, nxt.start() if nxt else len(data.buf))
        if nxt is None and stop is None and not data.eof:
            searched = max(pos + 1, len(data.buf) - len(tag) - 2)
            data.fill()
            continue
        last = nxt is None or stop is not None
        chunk = data.buf[pos : stop.start() if stop else nxt.start() if nxt else len(data.buf)]
        chunk = chunk[: chunk.rfind(b">") + 1]  # damaged bytes between two records touch neither
        offset = data.base + pos
        cut_short = last and stop is None  # the file ended (or its decompression failed) inside <root>
        try:
            element = parse(declaration + chunk)
        except ParseError as err:
            element = None
            if not cut_short:
                dead_letter(stats, dead, path, "malformed_record", err, record=record, offset=offset)
        if element is not None:
            yield "record", record, element
        if cut_short:
            # One dead letter for where the file stops: the last record if it is cut, else after it.
            where = {"record": record, "offset": offset} if element is None else {"record": record + 1, "offset": data.base + len(data.buf)}
            if data.error is not None:
                dead_letter(stats, dead, path, "corrupt_compression", data.error, **where)
            else:
                dead_letter(stats, dead, path, "truncated_file", f"the file ends inside <{root}> (no closing </{root}>)", **where)
        if last:
            return
        record += 1
        pos = nxt.start()
        if pos > data.block:  # drop what was read, a block at a time (not per record: that copies the buffer)
            data.drop_before(pos)
            pos = 0
        searched = pos + 1


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
