"""Rebuild the bundled sample under data/sample/ from the shared corpus (../shared/corpus).

Not run by tests or the demo: the sample is committed. Kept so the sample's making is reproducible.
WARC records are copied as their original gzip members, byte for byte, in their original order.
"""
from __future__ import annotations

import io
import os
import shutil
import sys

from warcio.archiveiterator import ArchiveIterator

SHARED = os.environ.get("CORPUSMILL_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
OUT = os.path.join(os.path.dirname(__file__), "..", "data", "sample")
WARC_BUDGET = 1_700_000  # compressed bytes per sample WARC
MAX_PAYLOAD = 120_000

MALFORMED_AND_FORMATS = [
    "chatnoir-resiliparse__clipped.warc.gz", "pywb__bad.arc", "pywb__example-bad.warc.gz.bad",
    "pywb__example-extra.warc", "pywb__example.arc.gz", "pywb__example.warc", "pywb__missing-status-text.warc",
    "warcio__example-bad-non-chunked.warc.gz", "warcio__example-digest.warc", "warcio__example-iana.org-chunked.warc",
    "warcio__example-space-in-url.arc", "warcio__example-trunc.warc", "warcio__example-wget-bad-target-uri.warc.gz",
    "warcio__example-wrong-chunks.warc.gz", "warcio__example.warc.gz", "whirlwind-python__whirlwind.warc.gz",
    "whirlwind-python__whirlwind.warc.wet.gz", "whirlwind-python__whirlwind.warc.wat.gz",
]  # fmt: skip


def sample_warc(name: str) -> int:
    src = os.path.join(SHARED, "commoncrawl", name)
    data = open(src, "rb").read()
    out, n, total = [], 0, 0
    it = ArchiveIterator(io.BytesIO(data))
    for record in it:
        record.content_stream().read()
        start, length = it.get_record_offset(), it.get_record_length()
        size = int(record.rec_headers.get_header("Content-Length") or 0)
        if record.rec_type == "warcinfo" or (size < MAX_PAYLOAD and total + length <= WARC_BUDGET):
            out.append(data[start : start + length])
            total += length
            n += record.rec_type == "response"
    with open(os.path.join(OUT, "commoncrawl", name), "wb") as f:
        f.write(b"".join(out))
    return n


def main() -> int:
    os.makedirs(os.path.join(OUT, "commoncrawl", "malformed"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "wikipedia"), exist_ok=True)
    for name in ("crawl-00000.warc.gz", "crawl-00001.warc.gz"):
        print(name, sample_warc(name), "responses")
    for name in MALFORMED_AND_FORMATS:
        shutil.copyfile(os.path.join(SHARED, "commoncrawl", "third_party_samples", name),
                        os.path.join(OUT, "commoncrawl", "malformed", name))
    # The whole English Wikipedia lead-section slice (8,033 articles): LM and quality-classifier positives.
    shutil.copyfile(os.path.join(SHARED, "wikipedia", "summaries-en.jsonl.gz"),
                    os.path.join(OUT, "wikipedia", "summaries-en.jsonl.gz"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
