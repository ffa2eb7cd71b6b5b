"""Fuzzing per input format: seeded truncations, byte flips and holes in the real bundled files, read by
the job's own reader. For every case: no crash; read = kept + dropped; every drop is a dead letter
naming the file and where; every record the damage did not touch comes out unchanged (lost = 0).
The definitions of damaged and intact: tests/reliability_damage.py.

`python -m tests.test_reliability_fuzz` prints the table of docs/reliability.md.
"""
from __future__ import annotations

import bz2
import dataclasses
import gzip
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from pipeline.accounting import StageStats
from pipeline.schema import ORD_FILE_SHIFT
from pipeline.sources import arxiv, books, c4, github, stackexchange, wikipedia
from tests.reliability_damage import CASES, MORE_CASES, Tally, content_touched, damage, line_spans, touches, xml_spans

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
CC = SAMPLE / "commoncrawl"
RECORD_MASK = (1 << ORD_FILE_SHIFT) - 1


def source_reader(module, config):
    def read(path):
        stats, dead = StageStats("read"), []
        rows = [r for _, b in module.read(str(path), 0, stats, dead, config) for r in b.to_pylist()]
        return rows, stats, dead
    return read


def warc_reader(path):
    from pipeline.warc import iter_raw_batches

    stats, dead = StageStats("read"), []
    rows = [r for _, b in iter_raw_batches(str(path), 0, stats, dead) for r in b.to_pylist()]
    return rows, stats, dead


def source_key(row):
    return row["id"], row["text"]


def whole(content):
    return None, [(0, len(content))]


@dataclasses.dataclass
class Format:
    name: str
    sample: Path  # the bundled file
    file_name: str  # the damaged copy's name (its suffix picks the decompression)
    compression: str | None  # of the bundled file; "unpack" variants are given plain
    read: Callable
    spans: Callable  # content -> (header span or None, span of each record number)
    key: Callable = source_key
    unpack: bool = False  # give the reader the decompressed content
    record_of: Callable = staticmethod(lambda row: row["_ord"] & RECORD_MASK)
    folder: str | None = None  # the damaged copy goes into this folder (a StackExchange site)


def _wiki_spans(content):
    return xml_spans(content, "mediawiki", "page")


def _se_spans(content):
    return xml_spans(content, "posts", "row")


SE_SITE = SAMPLE / "stackexchange" / "coffee.stackexchange.com" / "Posts.xml"
SE = stackexchange.StackExchangeConfig()

FORMATS = [
    Format("c4 .json.gz", SAMPLE / "c4" / "c4-00000.json.gz", "c4.json.gz", "gz", source_reader(c4, c4.C4Config()), lambda c: (None, line_spans(c))),
    Format("c4 .json", SAMPLE / "c4" / "c4-00000.json.gz", "c4.json", "gz", source_reader(c4, c4.C4Config()), lambda c: (None, line_spans(c)), unpack=True),
    Format("github .jsonl.gz", SAMPLE / "github" / "github-sample.jsonl.gz", "gh.jsonl.gz", "gz", source_reader(github, github.GitHubConfig()),
           lambda c: (None, line_spans(c))),
    Format("github .jsonl", SAMPLE / "github" / "github-sample.jsonl.gz", "gh.jsonl", "gz", source_reader(github, github.GitHubConfig()),
           lambda c: (None, line_spans(c)), unpack=True),
    Format("wikipedia .xml.bz2", SAMPLE / "wikipedia" / "enwiki-first-pages.xml.bz2", "enwiki.xml.bz2", "bz2",
           source_reader(wikipedia, wikipedia.WikipediaConfig()), _wiki_spans),
    Format("wikipedia .xml", SAMPLE / "wikipedia" / "enwiki-first-pages.xml.bz2", "enwiki.xml", "bz2",
           source_reader(wikipedia, wikipedia.WikipediaConfig()), _wiki_spans, unpack=True),
    Format("stackexchange Posts.xml", SE_SITE, "Posts.xml", None, source_reader(stackexchange, SE), _se_spans,
           folder="coffee.stackexchange.com"),
    Format("books .txt.gz", SAMPLE / "books" / "pg9198_9198-8.txt.gz", "book.txt.gz", "gz", source_reader(books, books.BooksConfig()), whole),
    Format("books .txt", SAMPLE / "books" / "pg9198_9198-8.txt.gz", "book.txt", "gz", source_reader(books, books.BooksConfig()), whole, unpack=True),
    Format("arxiv .tar.gz", SAMPLE / "arxiv" / "1707.08043.tar.gz", "1707.08043.tar.gz", "gz", source_reader(arxiv, arxiv.ArxivConfig()), whole),
    Format("warc.gz (gzip per record)", CC / "crawl-00000.warc.gz", "crawl.warc.gz", None, warc_reader, None,
           key=lambda r: (r["record_id"], r["payload"])),
    Format("warc (plain)", CC / "malformed" / "pywb__example.warc", "example.warc", None, warc_reader, None,
           key=lambda r: (r["record_id"], r["payload"])),
    Format("arc.gz", CC / "malformed" / "pywb__example.arc.gz", "example.arc.gz", None, warc_reader, None,
           key=lambda r: (r["url"], r["payload"])),
    Format("wet.gz", CC / "malformed" / "whirlwind-python__whirlwind.warc.wet.gz", "w.warc.wet.gz", None, warc_reader, None,
           key=lambda r: (r["record_id"], r["payload"])),
]

TALLIES: dict[str, Tally] = {}


def _warc_spans(rows, size, arc):
    """A WARC's records in file coordinates: from a document record's offset to the next one's."""
    offsets = sorted(r["_offset"] for r in rows)
    header = (0, offsets[0]) if arc else None  # an ARC file's version block: its records cannot be found without it
    return header, [(o, nxt) for o, nxt in zip(offsets, offsets[1:] + [size])], {o: i for i, o in enumerate(offsets)}


def check_case(rows, stats, dead, path):
    """No crash (we got here), read = kept + dropped, every drop a dead letter naming the file and where."""
    dropped = Counter(stats.dropped)
    assert stats.docs_in == stats.docs_out + sum(dropped.values()), (path, stats.to_dict())
    assert stats.docs_out == len(rows)
    explained = dropped["malformed_record"] if "malformed_record" in dropped and all(
        d["reason"] not in dropped for d in dead if d["reason"] != "malformed_record") and not set(dropped) - {"malformed_record"} else None
    if explained is not None:  # the web reader: one reason for the stage, the dead letter says which
        assert len(dead) == explained
    else:
        dropped.pop("too_large", None)  # GitHub: a file over 1 MiB is a rule, not damage
        assert Counter(d["reason"] for d in dead) == dropped, (dead, stats.to_dict())
    for d in dead:
        assert str(d["file"]).startswith(str(path)) and ("record" in d or "offset" in d) and d["error"]


def run_format(fmt: Format, tmp: Path, cases=CASES) -> Tally:
    raw = fmt.sample.read_bytes()
    content = {"gz": gzip.decompress, "bz2": bz2.decompress, None: lambda b: b}[fmt.compression](raw)
    original = content if fmt.unpack else raw
    given_compression = None if fmt.unpack or fmt.read is warc_reader else fmt.compression
    folder = tmp / (fmt.folder or "in")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fmt.file_name
    path.write_bytes(original)
    rows, stats, dead = fmt.read(path)
    assert rows and not dead, f"{fmt.name}: the undamaged sample must read cleanly"
    if fmt.read is warc_reader:
        header, spans, index = _warc_spans(rows, len(original), fmt.file_name.endswith((".arc", ".arc.gz")))
        records = {index[r["_offset"]]: fmt.key(r) for r in rows}
    else:
        header, spans = fmt.spans(content)
        records = {fmt.record_of(r): fmt.key(r) for r in rows}
    tally = Tally()
    for kind, seed in cases:
        damaged_bytes, touched = damage(original, kind, seed)
        path.write_bytes(damaged_bytes)
        got, stats, dead = fmt.read(path)
        check_case(got, stats, dead, path)
        touched = content_touched(content, damaged_bytes, touched, given_compression)
        whole_file = header is not None and touches(header, touched)  # the header: every record depends on it
        damaged = {i for i in records if whole_file or touches(spans[i], touched)}
        kept = {fmt.key(r) for r in got}
        lost = {i for i in records if i not in damaged and records[i] not in kept}
        assert not lost, f"{fmt.name} {kind} {seed}: records {sorted(lost)[:10]} untouched by the damage were lost"
        tally.cases += 1
        tally.records += len(records)
        tally.damaged += len(damaged)
        tally.damaged_unchanged += sum(records[i] in kept for i in damaged)
        tally.changed += len(kept - set(records.values()))
        tally.dead_letters += len(dead)
    return tally


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_damaged_input_keeps_every_intact_record(fmt, tmp_path):
    TALLIES[fmt.name] = run_format(fmt, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_85_more_cases_keep_every_intact_record(fmt, tmp_path):
    run_format(fmt, tmp_path, MORE_CASES)


if __name__ == "__main__":
    import sys
    import tempfile

    cases = MORE_CASES if "--more" in sys.argv else CASES
    print(Tally.HEADER)
    for fmt in FORMATS:
        with tempfile.TemporaryDirectory() as tmp:
            print(run_format(fmt, Path(tmp), cases).row(fmt.name), flush=True)


BOOK_TEXT = SAMPLE / "books" / "pg9198_9198-8.txt.gz"


@pytest.mark.parametrize("fmt", [f for f in FORMATS if not f.name.startswith(("books", "arc", "wet"))], ids=lambda f: f.name)
def test_a_file_of_another_format_is_one_dead_letter(fmt, tmp_path):
    """A book's text under the format's name (gzip'ed where the name says so): one dead letter, nothing kept."""
    text = gzip.decompress(BOOK_TEXT.read_bytes())[:100_000]
    folder = tmp_path / (fmt.folder or "in")
    folder.mkdir()
    path = folder / fmt.file_name
    compression = None if fmt.unpack or fmt.read is warc_reader and not fmt.file_name.endswith(".gz") else fmt.compression or "gz"
    path.write_bytes({"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress, None: lambda b: b}[compression](text))
    rows, stats, dead = fmt.read(path)
    check_case(rows, stats, dead, path)
    assert rows == [] and len(dead) == 1 and stats.docs_in == 1, (stats.to_dict(), dead)
    assert dead[0]["reason"] in ("unreadable_file", "unreadable_archive", "no_tex_files")
