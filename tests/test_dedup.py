"""Line normalisation and the global line dedup census."""
import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.dedup import (
    ApplyDedup, DuplicateTable, HashLines, LineCensus, census_input, census_parts, compact, line_hashes,
)
from pipeline.extract import WORK_SCHEMA
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


def dedup(batch, policy):
    hashed, st_in = HashLines()(batch)
    census = LineCensus()
    census.add(*census_input(hashed))
    step = ApplyDedup(policy, DuplicateTable.from_ranges([(0, *census.duplicates())]))
    out, stats = step(hashed)
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values())
    return out, st_in, stats


BATCH = docs(
    "Home\nAbout us\nThe river flooded the valley in 1993.\nAbout us\nCopyright 2019",
    "Home\nCopyright 2021\nA new bridge opened in the spring.",
    "home\nabout US",
)


def test_remove_all_drops_every_copy_and_repeats_in_a_document():
    out, st_in, stats = dedup(BATCH, "remove_all")
    assert st_in.lines_in == 10 and st_in.lines_out == 9  # "About us" repeated inside doc 0
    assert out.column("text").to_pylist() == ["The river flooded the valley in 1993.", "A new bridge opened in the spring."]
    assert stats.dropped["all_lines_duplicate"] == 1  # doc 2 is only shared lines


def test_keep_first_keeps_the_copy_of_the_first_document():
    out, _, stats = dedup(BATCH, "keep_first")
    assert out.column("text").to_pylist() == [
        "Home\nAbout us\nThe river flooded the valley in 1993.\nCopyright 2019",
        "A new bridge opened in the spring.",
    ]
    assert out.column("nlines").to_pylist() == [4, 1]


def test_unknown_policy():
    with pytest.raises(ValueError, match="unknown dedup policy"):
        ApplyDedup("keep_last")


def test_census_is_independent_of_partitioning_and_order():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, size=5000, dtype=np.uint64)
    hashes = np.concatenate([hashes, hashes[:1000], hashes[:10]])  # shared lines
    orders = rng.permutation(len(hashes)).astype(np.uint64)
    reference = LineCensus().add(hashes, orders).duplicates()
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(hashes))
        chunks = np.array_split(perm, 7)
        parts = [LineCensus(buffer_limit=500).add(hashes[c], orders[c]) for c in chunks]
        random.Random(seed).shuffle(parts)
        merged = parts[0]
        for p in parts[1:]:
            merged.merge(p)
        got = merged.duplicates()
        assert np.array_equal(got[0], reference[0]) and np.array_equal(got[1], reference[1])
    assert len(reference[0]) == 1000


def test_census_ranges_concatenate_sorted():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**64 - 1, size=2000, dtype=np.uint64)
    hashes = np.concatenate([hashes, hashes])
    orders = np.arange(len(hashes), dtype=np.uint64)
    parts = census_parts(hashes, orders, range_bits=4)
    assert len(parts) == 16
    table = DuplicateTable.from_ranges([(r, *LineCensus().add(h, o).duplicates()) for r, (h, o) in parts.items()])
    assert np.all(np.diff(table.hashes.astype(np.float64)) >= 0) and len(table.hashes) == 2000
    found, first = table.lookup(hashes[:10])
    assert found.all() and np.array_equal(first, orders[:10])


def test_compact_memory_is_16_bytes_per_distinct_line():
    h = np.arange(1000, dtype=np.uint64).repeat(3)
    o = np.arange(3000, dtype=np.uint64)
    keys, orders = compact(h, o)
    assert keys.nbytes + orders.nbytes == 16 * 1000


def test_line_hashes_offsets():
    offsets, hashes = line_hashes(pa.array(["a\nb", "c", "A\n0"]))
    assert list(offsets) == [0, 2, 3, 5]
    assert hashes[0] == hashes[3]  # "a" == "A" after normalisation
