"""Reading WARC/WET/ARC, with the real malformed samples of warcio, pywb, resiliparse and whirlwind."""
import gzip

import pytest

from pipeline.accounting import StageStats
from pipeline.runs import InputError, expand_inputs
from pipeline.warc import iter_raw_batches
from tests.conftest import MALFORMED, WARCS


def read(path):
    stats, dead = StageStats("read"), []
    rows = [r for _, b in iter_raw_batches(str(path), 3, stats, dead, batch_records=16) for r in b.to_pylist()]
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values())
    assert stats.docs_out == len(rows)
    return rows, stats, dead


def test_sample_warc_reads_every_response_in_order():
    rows, stats, dead = read(WARCS[0])
    assert len(rows) == 111 and not dead
    assert stats.notes["skipped_warcinfo_records"] == 1
    assert [r["_ord"] for r in rows] == sorted(r["_ord"] for r in rows)
    assert all(r["_ord"] >> 40 == 3 for r in rows)
    assert all(r["http_status"] == 200 and r["content_type"] == "text/html" for r in rows)


@pytest.mark.parametrize(
    "name, docs, reasons",
    [
        ("chatnoir-resiliparse__clipped.warc.gz", 0, ["truncated_record"]),  # body clipped
        ("warcio__example-trunc.warc", 0, ["digest_mismatch"]),  # Content-Length off
        ("pywb__example-extra.warc", 1, ["digest_mismatch"]),  # one payload digest wrong
        ("warcio__example-wrong-chunks.warc.gz", 0, ["truncated_record"]),  # one record cut into several members
        ("warcio__example-space-in-url.arc", 0, ["truncated_record"]),
    ],
)
def test_malformed_records_are_dead_letters(name, docs, reasons):
    rows, stats, dead = read(MALFORMED / name)
    assert len(rows) == docs
    assert [d["reason"] for d in dead] == reasons
    assert stats.dropped["malformed_record"] == len(reasons)
    assert all(d["file"].endswith(name) and d["offset"] is not None for d in dead)


@pytest.mark.parametrize("name", ["pywb__example-bad.warc.gz.bad", "warcio__example-bad-non-chunked.warc.gz"])
def test_whole_file_gzip_member_is_recovered(name):
    # warcio refuses these ("non-chunked gzip"); the reader reads them decompressed instead.
    rows, stats, dead = read(MALFORMED / name)
    assert rows and not dead
    assert "example.com" in rows[0]["url"]


def test_invalid_arc_lengths_do_not_crash():
    rows, stats, dead = read(MALFORMED / "pywb__bad.arc")
    assert stats.docs_in == 3


def test_wet_conversion_records_are_documents():
    rows, _, dead = read(MALFORMED / "whirlwind-python__whirlwind.warc.wet.gz")
    assert len(rows) == 1 and rows[0]["record_type"] == "conversion" and not dead
    assert b"Escopete" in rows[0]["payload"]


def test_wat_has_no_documents_but_is_noted():
    rows, stats, _ = read(MALFORMED / "whirlwind-python__whirlwind.warc.wat.gz")
    assert rows == [] and stats.notes["skipped_metadata_records"] == 1


def test_corrupt_gzip_member_loses_only_that_record(tmp_path):
    data = bytearray(open(WARCS[0], "rb").read())
    data[300000:300040] = b"\0" * 40  # inside a record's deflate stream
    bad = tmp_path / "corrupt.warc.gz"
    bad.write_bytes(bytes(data))
    rows, stats, dead = read(bad)
    assert len(rows) == 110 and stats.docs_in == 111
    assert len(dead) == 1 and dead[0]["offset"] > 0


def test_truncated_gzip_file(tmp_path):
    data = open(WARCS[0], "rb").read()
    bad = tmp_path / "cut.warc.gz"
    bad.write_bytes(data[: len(data) // 2])
    rows, stats, dead = read(bad)
    assert 0 < len(rows) < 111 and len(dead) == 1


def test_not_an_archive(tmp_path):
    bad = tmp_path / "notes.warc.gz"
    bad.write_bytes(gzip.compress(b"just some text\nthat is not a WARC file\n"))
    rows, stats, dead = read(bad)
    assert rows == [] and dead[0]["reason"] == "unreadable_archive"


def test_empty_glob_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no input files match"):
        expand_inputs(str(tmp_path / "*.warc.gz"))


def test_the_reader_streams_its_file(tmp_path):
    """Memory per file is bounded by a record, not the file: reading a 40 MB WARC (the bundled one
    repeated) allocates far less than the file's size."""
    import tracemalloc

    one = open(WARCS[0], "rb").read()
    big = tmp_path / "big.warc.gz"
    copies = (40 << 20) // len(one) + 1
    big.write_bytes(one * copies)
    per_copy = len(read(WARCS[0])[0])
    tracemalloc.start()
    n = sum(b.num_rows for _, b in iter_raw_batches(str(big), 0, StageStats("read"), [], 16))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == copies * per_copy
    assert peak < 0.25 * big.stat().st_size, peak
