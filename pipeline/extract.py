"""HTML -> main text (resiliparse by default, trafilatura as an option), and WET text -> documents.

Decoding: the declared charset is tried strictly; a page that declares a Latin-1 family charset but
is valid UTF-8 is read as UTF-8 (the most common wrong declaration); otherwise resiliparse's
detector decides. Payloads that are neither HTML nor plain text are dropped as `non_html`; a non-2xx
HTTP status as `http_status`; pages with no text left as `no_text`.
"""
from __future__ import annotations

import codecs
import dataclasses
import json

import pyarrow as pa
import pyarrow.compute as pc
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding
from resiliparse.parse.html import HTMLTree

from pipeline.schema import WORK_FIELDS, document_id
from pipeline.step import Outcome, Step
from pipeline.text import clean_lines

HTML_TYPES = {"text/html", "application/xhtml+xml", "application/xml+html"}
TEXT_TYPES = {"text/plain"}
_LATIN1_FAMILY = {"iso-8859-1", "latin-1", "latin1", "windows-1252", "cp1252", "us-ascii", "ascii"}

WORK_SCHEMA = pa.schema(WORK_FIELDS)


def decode_payload(payload: bytes, declared: str | None) -> str:
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            declared = None
    if declared:
        try:
            text = payload.decode(declared)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if declared.lower() in _LATIN1_FAMILY and not payload.isascii():
                try:
                    return payload.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return text
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    encoding = detect_encoding(payload) or "cp1252"
    return payload.decode(encoding, errors="replace")


def _looks_like_html(payload: bytes) -> bool:
    head = payload[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")) or b"<html" in head


@dataclasses.dataclass
class ExtractText(Step):
    """Raw WARC/WET records -> documents with cleaned text (non-empty, stripped lines)."""

    extractor: str = "resiliparse"  # or "trafilatura" (optional extra)
    source: str = "commoncrawl"
    name: str = "extract"

    def html_to_text(self, html: str) -> str:
        if self.extractor == "resiliparse":
            tree = HTMLTree.parse(html)
            return extract_plain_text(
                tree, main_content=True, alt_texts=False, links=False, form_fields=False, noscript=False
            )
        if self.extractor == "trafilatura":
            import trafilatura  # optional extra: pip install 'corpusmill[trafilatura]'

            return trafilatura.extract(html, include_comments=False, include_tables=True) or ""
        raise ValueError(f"unknown extractor {self.extractor!r} (resiliparse or trafilatura)")

    def measure(self, batch):
        if "payload" in batch.schema.names:  # raw records: their payload bytes
            return int(pc.sum(pc.binary_length(batch.column("payload"))).as_py() or 0), 0
        return super().measure(batch)

    def process(self, raw: pa.RecordBatch, notes) -> Outcome:
        rows, reasons = [], []
        cols = raw.to_pydict()
        for i in range(raw.num_rows):
            text, reason = self._text(cols, i)
            reasons.append(reason)
            meta = {"warc_record_id": cols["record_id"][i], "warc_date": cols["date"][i], "file": cols["_file"][i]}
            nlines = text.count("\n") + 1 if text else 0
            rows.append(
                {
                    "_ord": cols["_ord"][i],
                    "id": document_id(self.source, cols["record_id"][i] or f"{cols['_file'][i]}@{cols['_offset'][i]}"),
                    "source": self.source,
                    "url": cols["url"][i],
                    "text": text,
                    "original_nlines": nlines,
                    "original_length": len(text),
                    "nlines": nlines,
                    "metadata": json.dumps(meta, sort_keys=True, ensure_ascii=False),
                }
            )
        return Outcome(batch=pa.RecordBatch.from_pylist(rows, schema=WORK_SCHEMA), drop=reasons)

    def _text(self, cols: dict, i: int) -> tuple[str, str | None]:
        """(cleaned text, None) or ("", the reason the record is dropped)."""
        payload = cols["payload"][i] or b""
        status = cols["http_status"][i]
        if status is not None and not 200 <= status < 300:
            return "", "http_status"
        media = cols["content_type"][i]
        if cols["record_type"][i] == "conversion" or media in TEXT_TYPES:
            text = decode_payload(payload, cols["charset"][i] or "utf-8")
        elif media in HTML_TYPES or (media is None and _looks_like_html(payload)):
            text = self.html_to_text(decode_payload(payload, cols["charset"][i]))
        else:
            return "", "non_html"
        lines = clean_lines(text)
        return ("\n".join(lines), None) if lines else ("", "no_text")
