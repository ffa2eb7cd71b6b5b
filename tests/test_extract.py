"""HTML extraction and decoding, on real pages and on the bad inputs a crawl holds."""
import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.extract import ExtractText, decode_payload
from pipeline.warc import RAW_SCHEMA, iter_raw_batches
from tests.conftest import WARCS


def raw(payload: bytes, content_type="text/html", charset=None, status=200, record_type="response"):
    return pa.RecordBatch.from_pylist(
        [{"_ord": 1, "_file": "x.warc", "_record": 0, "url": "http://example.org/", "record_id": "<urn:uuid:1>",
          "date": None, "record_type": record_type, "http_status": status, "content_type": content_type,
          "charset": charset, "payload": payload}],
        schema=RAW_SCHEMA,
    )


def extract(batch):
    out, stats = ExtractText()(batch)
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values())
    return out.to_pylist(), stats


PAGE = "<html><head><title>t</title></head><body><article><h1>Café crème</h1><p>{}</p></article></body></html>"


def test_real_pages_give_main_text_without_markup():
    stats, dead = StageStats("read"), []
    _, batch = next(iter_raw_batches(WARCS[0], 0, stats, dead, batch_records=32))
    docs, st = extract(batch)
    assert len(docs) >= 30
    for d in docs:
        assert "<div" not in d["text"] and "</p>" not in d["text"]
        assert d["nlines"] == d["original_nlines"] == len(d["text"].split("\n"))
        assert all(line == line.strip() and line for line in d["text"].split("\n"))


def test_wrong_declared_charset_utf8_declared_latin1():
    body = PAGE.format("Größe und Übermaß, naïve façade.").encode("utf-8")
    docs, _ = extract(raw(body, charset="iso-8859-1"))
    assert "Größe und Übermaß" in docs[0]["text"]


def test_declared_charset_is_used_when_right():
    body = PAGE.format("Größe und Übermaß").encode("cp1252")
    docs, _ = extract(raw(body, charset="windows-1252"))
    assert "Größe und Übermaß" in docs[0]["text"]


def test_invalid_utf8_does_not_fail():
    body = PAGE.format("valid start \xff\xfe broken").encode("latin-1")[:-5] + b"\xc3\x28 end</html>"
    docs, _ = extract(raw(body, charset="utf-8"))
    assert "valid start" in docs[0]["text"]


def test_unknown_charset_name_falls_back():
    docs, _ = extract(raw(PAGE.format("hello world").encode(), charset="x-no-such-charset"))
    assert "hello world" in docs[0]["text"]


def test_nul_bytes_are_removed():
    docs, _ = extract(raw(PAGE.format("before\x00after and more").encode()))
    assert "\x00" not in docs[0]["text"] and "beforeafter" in docs[0]["text"]


def test_single_10mb_line():
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    line = sentence * (10_000_000 // len(sentence))
    docs, st = extract(raw(PAGE.format(line).encode()))
    assert len(docs) == 1 and len(docs[0]["text"]) > 9_000_000


def test_empty_page_is_no_text():
    docs, st = extract(raw(b"<html><body>   </body></html>"))
    assert docs == [] and st.dropped["no_text"] == 1


def test_non_html_payload_is_dropped():
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"\0" * 64
    docs, st = extract(raw(png, content_type="image/png"))
    assert docs == [] and st.dropped["non_html"] == 1


def test_http_error_status_is_dropped():
    docs, st = extract(raw(PAGE.format("not found").encode(), status=404))
    assert docs == [] and st.dropped["http_status"] == 1


def test_wet_text_is_taken_as_is():
    docs, _ = extract(raw("Línea uno\n\nLínea dos\n".encode(), content_type=None, record_type="conversion"))
    assert docs[0]["text"] == "Línea uno\nLínea dos" and docs[0]["nlines"] == 2


def test_decode_payload_bom_and_detection():
    assert decode_payload("\ufeffhello".encode("utf-8"), None).lstrip("\ufeff") == "hello"
    assert decode_payload("привет мир".encode("cp1251"), None)  # detected, not an exception
