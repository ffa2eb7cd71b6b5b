import gzip

import numpy as np

from pipeline.sources import books, plan
from tests.jobs import run_in_process
from tests.sources.conftest import SAMPLE, read_all

BOOKS = SAMPLE / "books"


def _text(name):
    return books.decode_text(gzip.decompress((BOOKS / name).read_bytes()))[0]


def test_gutenberg_header_and_footer_stripped_real_book():
    raw = _text("pg9198_9198-8.txt.gz")
    body, head, foot = books.strip_gutenberg(raw)
    assert head and foot
    assert "PROJECT GUTENBERG" not in body.upper()[:2000] and "END OF THIS PROJECT GUTENBERG" not in body.upper()
    assert "Gutenberg License" not in body and len(body) > 0.8 * len(raw) - 25000
    fields = books.gutenberg_header_fields(raw)
    assert fields["title"].startswith("The Complete Angler") and fields["gutenberg_id"] == "9198"


def test_latin1_declared_charset_decoded():
    text = _text("pg14263_14263-8_latin1.txt.gz")
    ascii_text = _text("pg14263_14263_ascii.txt.gz")
    assert any(c in text for c in "éèêàç") and not any(c in ascii_text for c in "éèêàç")
    # after folding accents the two editions share nearly all 5-gram shingles
    a, b = books.shingles(books.strip_gutenberg(text)[0]), books.shingles(books.strip_gutenberg(ascii_text)[0])
    assert len(a & b) / len(a | b) > 0.99


def test_minhash_estimates_jaccard_of_real_pairs():
    cur = books.strip_gutenberg(_text("pg972_972_current.txt.gz"))[0]
    old = books.strip_gutenberg(_text("pg972_972_old_dvldc10.txt.gz"))[0]
    other = books.strip_gutenberg(_text("pg9198_9198-8.txt.gz"))[0]
    exact = lambda x, y: len(x & y) / len(x | y)  # noqa: E731
    s_cur, s_old, s_other = books.shingles(cur), books.shingles(old), books.shingles(other)
    est = books.estimated_jaccard(books.signature(cur), books.signature(old))
    assert abs(est - exact(s_cur, s_old)) < 0.06 and est >= 0.9
    assert books.estimated_jaccard(books.signature(cur), books.signature(other)) < 0.2 > exact(s_cur, s_other)


def test_clusters_keep_first_and_ignore_pair_order():
    pairs = [(5, 9), (1, 5), (20, 30), (9, 12)]
    expected = np.array([5, 9, 12, 30], dtype=np.uint64)
    assert np.array_equal(books.duplicates_to_drop(pairs), expected)
    assert np.array_equal(books.duplicates_to_drop(list(reversed(pairs))), expected)


def test_lsh_buckets_pair_the_real_near_duplicates_only():
    """band_keys and verified_pairs on the five sample books: the two real near-duplicate pairs
    (Katrine Latin-1/ASCII, The Devil's Dictionary current/old edition) share a band bucket and pass
    the verification; no other pair does either."""
    from itertools import combinations

    names = sorted(p.name for p in BOOKS.glob("*.txt.gz"))
    sigs = {n: books.signature(books.strip_gutenberg(_text(n))[0]) for n in names}
    keys = {n: set(books.band_keys(sigs[n])) for n in names}
    assert all(len(k) == books.BANDS for k in keys.values())
    near = {("pg14263_14263-8_latin1.txt.gz", "pg14263_14263_ascii.txt.gz"), ("pg972_972_current.txt.gz", "pg972_972_old_dvldc10.txt.gz")}
    candidates = {(a, b) for a, b in combinations(names, 2) if keys[a] & keys[b]}
    assert candidates == near
    order = {n: i for i, n in enumerate(names)}
    members = [(order[n], sigs[n]) for n in names]  # one bucket holding all five: verification alone decides
    assert set(books.verified_pairs(members, 0.9)) == {(order[a], order[b]) for a, b in near}


def test_sample_run_removes_one_of_each_near_duplicate_pair(tmp_path):
    paths = [str(p) for p in sorted(BOOKS.glob("*.txt.gz"))]
    table, stats, dead = run_in_process(plan("books", books.BooksConfig(), str(tmp_path)), paths, tmp_path)
    files = [__import__("json").loads(m)["file"] for m in table.column("metadata").to_pylist()]
    # input order is the sorted paths ('-8_latin1' < '_ascii', 'current' < 'old'): the first of each pair stays
    assert files == ["pg14263_14263-8_latin1.txt.gz", "pg9198_9198-8.txt.gz", "pg972_972_current.txt.gz"]
    assert stats["dropped"] == {"near_duplicate": 2}


def test_unreadable_gzip_is_a_dead_letter(tmp_path):
    bad = tmp_path / "broken.txt.gz"
    bad.write_bytes((BOOKS / "pg9198_9198-8.txt.gz").read_bytes()[:5000])
    batches, stats, dead = read_all(books, bad, books.BooksConfig())
    assert not batches and stats.dropped["unreadable_file"] == 1 and dead[0]["file"] == str(bad)
