"""The one-pass sample: per-file candidates merged in any order select what a global selection over
all documents selects."""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from conftest import load_documents
from tokenizer.sample import Candidates, char_lengths, document_ranks, select, training_block


def _files(source: str, parts: int):
    docs = load_documents(source)
    size = -(-len(docs) // parts)
    return [docs[i * size : (i + 1) * size] for i in range(parts)]


def _candidates(files, budget):
    out = []
    for index, docs in enumerate(files):
        texts = pa.array([d["text"] for d in docs])
        ranks = document_ranks(pa.array([d["id"] for d in docs]), seed=7)
        out.append(Candidates.of_file(index, ranks, texts.to_pylist(), char_lengths(texts), budget, 4192))
    return out


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.999, 2.5])
def test_merged_candidates_select_as_the_global_selection(fraction):
    files = _files("wikipedia", 4)
    texts = pa.array([d["text"] for f in files for d in f])
    ranks = document_ranks(pa.array([d["id"] for f in files for d in f]), seed=7)
    lengths = char_lengths(texts)
    budget = int(lengths.sum() * fraction)
    expected = select(ranks, lengths, budget).copies_of(ranks)
    results = set()
    for perm in itertools.permutations(_candidates(files, budget)):
        merged = perm[0]
        for c in perm[1:]:
            merged = merged.merge(c)
        copies = merged.selection().copies_of(merged.ranks)
        got = np.zeros(len(lengths), np.int64)
        offsets = np.cumsum([0] + [len(f) for f in files])
        rows = offsets[(merged.order >> np.uint64(32)).astype(int)] + (merged.order & np.uint64(0xFFFFFFFF)).astype(int)
        got[rows] = copies
        assert (got == expected).all()
        # The cut keeps about one budget of text (plus the document that passes it).
        assert merged.lengths.sum() < budget + lengths.max() or fraction > 1
        results.add(tuple(sorted(zip(merged.order.tolist(), copies.tolist()))))
    assert len(results) == 1


def test_training_block_keeps_nonempty_lines_within_the_limit():
    block, lines, too_long = training_block("a\r\n\nbé\n" + "x" * 10 + "\n", 5)
    assert (block, lines, too_long) == ("a\nbé\n".encode(), 2, 1)
