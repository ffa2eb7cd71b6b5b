import gzip
import json
from collections import Counter

import pytest

from pipeline.sources import c4
from tests.sources.conftest import SAMPLE, read_all, run_source

C4_FILE = SAMPLE / "c4" / "c4-00000.json.gz"
# The bundled file's first 5 records are real C4 `en` records (data/sample/SOURCES-README.md); the rest
# are article bodies of another benchmark.
REAL_C4 = 5


def _records(n=None):
    with gzip.open(C4_FILE, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return records[:n] if n else records


def test_read_real_c4_lines_and_metadata():
    batches, stats, dead = read_all(c4, C4_FILE, c4.C4Config())
    assert stats.docs_in == stats.docs_out == len(_records()) == 186 and not dead
    first = batches[0].to_pylist()[0]
    assert first["source"] == "c4" and first["url"].startswith("http")
    assert json.loads(first["metadata"])["timestamp"]


def test_malformed_line_is_a_dead_letter_naming_file_and_line(tmp_path):
    good = json.dumps(_records(1)[0])
    path = tmp_path / "bad.json"
    path.write_text(good + "\n{not json\n" + json.dumps({"url": "x"}) + "\n")
    batches, stats, dead = read_all(c4, path, c4.C4Config())
    assert stats.docs_in == 3 and stats.docs_out == 1 and stats.dropped["malformed_record"] == 2
    assert [d["record"] for d in dead] == [1, 2] and all(d["file"] == str(path) for d in dead)


def test_released_c4_is_kept_as_it_is(tmp_path):
    # RedPajama took released C4 unchanged: every record, every byte of its text
    table, stats, dead = run_source("c4", [C4_FILE], c4.C4Config(), tmp_path)
    assert stats["read"] == stats["kept"] == len(_records()) and not stats["dropped"] and not dead
    assert table.column("text").to_pylist() == [r["text"] for r in _records()]
    assert table.column("language").to_pylist()[0] == "en"  # labelled, not filtered


def test_real_c4_pages_are_a_fixed_point_of_clean_page():
    # released C4 pages were made by these rules, so cleaning them again changes nothing
    rule = c4.C4CleanPage()
    for record in _records(REAL_C4):
        notes = Counter()
        assert rule.clean_page(record["text"], notes) == (record["text"], None) and not notes


def _real_lines():
    return [line for r in _records(REAL_C4) for line in r["text"].split("\n")]


def test_line_rules_on_real_lines():
    lines = _real_lines()
    extra = [
        "Home",  # no end mark
        "Read more...",  # an ellipsis
        "It was fun.",  # fewer than 5 words
        "Please enable JavaScript to view this page properly.",
        "Read our privacy policy before you sign up here.",
        lines[0] + " [1]",  # marker cut, a space is left at the end: no end mark (TFDS does not strip again)
        lines[1][:-1] + "[2]" + lines[1][-1],  # citation inside: cut, the line kept
        "w" * 1001 + " is a word far too long.",
    ]
    notes = Counter()
    page, reason = c4.C4CleanPage().clean_page("\n".join(lines + extra), notes)
    kept = page.split("\n")
    assert reason is None and kept[: len(lines)] == lines
    assert kept[len(lines):] == [lines[1]]  # only the line with the marker inside comes back, without it
    assert notes == Counter(lines_without_end_mark=3, lines_too_short=1, lines_with_javascript=1,
                            lines_with_policy_text=1, lines_with_too_long_word=1)


@pytest.mark.parametrize(
    "line,reason",
    [
        ("Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4_lorem_ipsum"),
        ("function f() { return 1; } is what the page said.", "c4_curly_bracket"),
        ("The rest of this page was about porn and nothing else.", "c4_badword"),
    ],
)
def test_page_rules(line, reason):
    text = "\n".join(_real_lines() + [line])
    assert c4.C4CleanPage().clean_page(text, Counter()) == (None, reason)


def test_badword_needs_a_non_letter_on_each_side():
    pattern = c4.load_badwords(c4.BADWORDS)
    assert len(c4.BADWORDS.read_text(encoding="utf-8").split()) >= 377
    assert pattern.search(" you bastard.") and not pattern.search(" scunthorpe.") and not pattern.search("sexton bells.")
    assert not pattern.search("bastard at the start of the line.")  # TFDS's regex needs a character before it


def test_too_few_sentences_and_length_cap():
    singles = [line for line in _real_lines() if c4.count_sentences(line) == 1]
    two = "\n".join(singles[:2])  # two real one-sentence lines: 2 < 3 sentences
    assert len(singles) >= 2 and c4.count_sentences(two) == 2
    assert c4.C4CleanPage().clean_page(two, Counter()) == (None, "c4_too_few_sentences")
    long_page = "\n".join(_real_lines() * 200)
    assert len(long_page) > 190_000 and c4.C4CleanPage().clean_page(long_page, Counter()) == (None, "c4_too_long")


def test_count_sentences():
    assert c4.count_sentences('He said "stop." Then he left! Why? 3.5 is a number.') == 4
    assert c4.count_sentences('A line ending in a quote "like this"\nAnother.') == 2  # one per non-empty line at least


def test_raw_pages_on_real_warc_pages():
    """C4's rules on pages extracted from the bundled Common Crawl WARC: what stays obeys each line rule,
    and every page is kept or dropped with a reason."""
    from pipeline.accounting import StageStats
    from pipeline.extract import ExtractText
    from pipeline.warc import iter_raw_batches

    stats, dead = StageStats("read"), []
    texts = []
    for _, raw in iter_raw_batches(str(SAMPLE / "commoncrawl" / "crawl-00000.warc.gz"), 0, stats, dead):
        docs, _ = ExtractText()(raw)
        texts += docs.column("text").to_pylist()
    assert len(texts) > 20
    rule, notes, reasons, kept = c4.C4CleanPage(), Counter(), Counter(), []
    for text in texts:
        page, reason = rule.clean_page(text, notes)
        reasons[reason] += 1
        if page is not None:
            kept.append(page)
    assert sum(reasons.values()) == len(texts) and reasons[None] == len(kept) > 0
    assert set(reasons) - {None} <= {"c4_too_long", "c4_lorem_ipsum", "c4_curly_bracket", "c4_badword", "c4_too_few_sentences"}
    assert notes["lines_without_end_mark"] > 0
    for page in kept:
        assert c4.count_sentences(page) >= 3
        for line in page.split("\n"):
            assert line.endswith(c4._END_MARKS) and not line.endswith("...") and len(line.split()) >= 5
            assert "javascript" not in line.lower() and "{" not in line


def test_raw_pages_line_dedup_across_pages(tmp_path):
    # two real C4 pages, the second repeating three lines of the first: the first page keeps them
    a, b = _records(2)
    shared = a["text"].split("\n")[:3]
    b_text = b["text"] + "\n" + "\n".join(shared)
    path = tmp_path / "two.json"
    path.write_text(json.dumps(a) + "\n" + json.dumps({**b, "text": b_text}) + "\n")
    table, stats, _ = run_source("c4", [path], c4.C4Config(rules="raw-pages", languages=("en",)), tmp_path / "first")
    texts = table.column("text").to_pylist()
    assert texts == [a["text"], b["text"]] and stats["kept"] == 2
    dedup = next(s for s in stats["stages"] if s["name"] == "dedup")
    assert dedup["lines_in"] - dedup["lines_out"] == len(shared)
    config = c4.C4Config(rules="raw-pages", languages=("en",), dedup_policy="remove_all")
    table, stats, _ = run_source("c4", [path], config, tmp_path / "all")
    rest = "\n".join(a["text"].split("\n")[3:])  # remove_all: neither page keeps a shared line
    gone = c4.count_sentences(rest) < 3
    assert table.column("text").to_pylist() == ([] if gone else [rest]) + [b["text"]]
    assert stats["dropped"] == ({"c4_too_few_sentences_after_dedup": 1} if gone else {})


def test_config_from_args_before_the_cli_has_the_flag():
    import argparse

    args = argparse.Namespace(languages=None, dedup=None, lid_threshold=0.5, lid_model=None, batch_records=None)
    assert c4.config_from_args(args).rules == "released" and c4.config_from_args(args).languages is None
    args.c4_rules = "raw-pages"
    assert c4.config_from_args(args).languages == ("en",)
    with pytest.raises(ValueError, match="unknown C4 rules"):
        c4.C4Config(rules="paper")
