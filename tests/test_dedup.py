"""Line normalisation and the global line dedup census."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup import (
    ApplyDedup, HashLines, census_input, census_range, duplicated_pairs, file_drops, line_hashes, pairs_in, range_count,
    write_file_hashes,
)
from pipeline.extract import WORK_SCHEMA
from pipeline.pairs import STRIDE, read_pairs, sort_pairs, write_pairs
from pipeline.phases import LineCensus
from pipeline.plan import Work
from pipeline.text import normalize_for_dedup, normalize_for_lm


def test_normalize_for_dedup_as_ccnet():
    lines = pa.array(["  Hello World 2023!  ", "hello world 1999!", "«Bonjour» — 12", "Tab\tand\x07bell"])
    out = normalize_for_dedup(lines).to_pylist()
    assert out[0] == out[1] == "hello world 0000!"  # ASCII punctuation stays, as in CCNet
    assert out[2] == "bonjour  00"  # CCNet's Unicode punctuation is removed
    assert out[3] == "tabandbell"  # non-printing characters removed


def test_normalize_for_lm_as_ccnet():
    assert normalize_for_lm("  Écoute «ça» 42 ") == 'ecoute "ca" 00'


def docs(*texts):
    rows = [{"_ord": i, "id": str(i), "source": "commoncrawl", "url": None, "text": t, "original_nlines": t.count("\n") + 1,
             "original_length": len(t), "nlines": t.count("\n") + 1, "metadata": None} for i, t in enumerate(texts)]
    return pa.RecordBatch.from_pylist(rows, schema=WORK_SCHEMA)


def dedup(batch, policy, tmp_path, ranges=1):
    """The whole dedup on one file: hashes to the work folder, the census of each range, the join."""
    hashed, st_in = HashLines()(batch)
    work = Work(str(tmp_path))
    write_file_hashes(work, 0, *census_input(hashed))
    for r in range(ranges):
        census_range(work, r, ranges, 1, policy)
    out, stats = ApplyDedup(file_drops(work, 0, ranges))(hashed)
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values())
    return out, st_in, stats


BATCH = docs(
    "Home\nAbout us\nThe river flooded the valley in 1993.\nAbout us\nCopyright 2019",
    "Home\nCopyright 2021\nA new bridge opened in the spring.",
    "home\nabout US",
)


def test_remove_all_drops_every_copy_and_repeats_in_a_document(tmp_path):
    out, st_in, stats = dedup(BATCH, "remove_all", tmp_path)
    assert st_in.lines_in == 10 and st_in.lines_out == 9  # "About us" repeated inside doc 0
    assert out.column("text").to_pylist() == ["The river flooded the valley in 1993.", "A new bridge opened in the spring."]
    assert stats.dropped["all_lines_duplicate"] == 1  # doc 2 is only shared lines


def test_keep_first_keeps_the_copy_of_the_first_document(tmp_path):
    out, _, stats = dedup(BATCH, "keep_first", tmp_path)
    assert out.column("text").to_pylist() == [
        "Home\nAbout us\nThe river flooded the valley in 1993.\nCopyright 2019",
        "A new bridge opened in the spring.",
    ]
    assert out.column("nlines").to_pylist() == [4, 1]


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown dedup policy"):
        LineCensus("keep_last", 1 << 20)


@pytest.mark.parametrize("policy", ["remove_all", "keep_first"])
def test_the_result_does_not_depend_on_the_number_of_ranges(tmp_path, policy):
    one = dedup(BATCH, policy, tmp_path / "one", ranges=1)[0]
    seven = dedup(BATCH, policy, tmp_path / "seven", ranges=7)[0]
    assert one.equals(seven)


def test_duplicated_pairs_against_a_plain_count():
    """Drop pairs checked against a dictionary count over the same random lines."""
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 50, size=400, dtype=np.uint64)  # few distinct values: many shared
    orders = rng.permutation(400).astype(np.uint64)
    by_hash = {}
    for h, o in zip(hashes.tolist(), orders.tolist()):
        by_hash.setdefault(h, []).append(o)
    want_all = sorted((o, h) for h, os_ in by_hash.items() if len(os_) > 1 for o in os_)
    want_first = sorted((o, h) for h, os_ in by_hash.items() if len(os_) > 1 for o in sorted(os_)[1:])
    for policy, want in (("remove_all", want_all), ("keep_first", want_first)):
        o, h = duplicated_pairs(hashes, orders, policy)
        assert list(zip(o.tolist(), h.tolist())) == want
        by_order = np.lexsort((hashes, orders))  # pairs of equal hash in order: the census's stable sort path
        o, h = duplicated_pairs(hashes[by_order], orders[by_order], policy, ties_in_order=True)
        assert list(zip(o.tolist(), h.tolist())) == want


def test_group_scope_compares_only_files_of_the_same_group():
    shift = np.uint64(40)
    hashes = np.array([7, 7, 7], np.uint64)
    orders = np.array([0 << 40, 1 << 40, 2 << 40], np.uint64)  # the same line in files 0, 1, 2
    assert len(duplicated_pairs(hashes, orders, "remove_all")[0]) == 3
    o, _ = duplicated_pairs(hashes, orders, "remove_all", group_files=2)  # groups {0, 1} and {2}
    assert sorted((o >> shift).tolist()) == [0, 1]


def test_pairs_in_is_exact_membership():
    rng = np.random.default_rng(3)
    o = rng.integers(0, 100, 1000, dtype=np.uint64)
    h = rng.integers(0, 100, 1000, dtype=np.uint64)
    pairs = sorted(set(zip(o.tolist(), h.tolist())))
    q_o = np.array([p[0] for p in pairs], np.uint64)
    q_h = np.array([p[1] for p in pairs], np.uint64)
    drop = set(pairs[::3])
    d_o = np.array([p[0] for p in sorted(drop)], np.uint64)
    d_h = np.array([p[1] for p in sorted(drop)], np.uint64)
    got = pairs_in(q_o, q_h, d_o, d_h)
    assert got.tolist() == [p in drop for p in pairs]


def test_pairs_file_reads_only_the_asked_range(tmp_path):
    rng = np.random.default_rng(4)
    keys, values = sort_pairs(rng.integers(0, 2**64 - 1, 3 * STRIDE + 17, dtype=np.uint64), np.arange(3 * STRIDE + 17, dtype=np.uint64))
    path = str(tmp_path / "x.pairs")
    write_pairs(path, keys, values)
    lo, hi = int(keys[1000]), int(keys[2 * STRIDE + 5])
    k, v = read_pairs(path, lo, hi)
    assert np.array_equal(k, keys[1000 : 2 * STRIDE + 5]) and np.array_equal(v, values[1000 : 2 * STRIDE + 5])
    assert np.array_equal(read_pairs(path)[0], keys)


def test_range_count_grows_with_the_lines():
    assert range_count(1000, 1 << 20) == 1
    assert range_count(10**9, 512 << 20) == -(-(10**9 * 64) // (512 << 20))  # 64 bytes a line while sorting


def test_line_hashes_offsets():
    offsets, hashes = line_hashes(pa.array(["a\nb", "c", "A\n0"]))
    assert list(offsets) == [0, 2, 3, 5]
    assert hashes[0] == hashes[3]  # "a" == "A" after normalisation


def test_strip_accents_is_cc_nets_per_character_rule():
    """The one-call translate equals cc_net's rule (NFD, then drop every Mn character) on real text."""
    import gzip
    import json
    import unicodedata

    from pipeline.text import _strip_accents
    from tests.conftest import WIKI

    def cc_net_rule(text):
        return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")

    with gzip.open(WIKI, "rt") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(3000))]
    accented = [t for t in texts if not t.isascii()]
    assert len(accented) > 100
    assert all(_strip_accents(t) == cc_net_rule(t) for t in accented)
