"""The one-pass sample: per-file candidates merged in any order select what a global selection over
all documents selects."""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from conftest import load_documents
from tokenizer.sample import Candidates, char_lengths, document_ranks, select, training_blocks


def _files(source: str, parts: int):
    docs = load_documents(source)
    size = -(-len(docs) // parts)
    return [docs[i * size : (i + 1) * size] for i in range(parts)]


def _candidates(files, budget):
    out = []
    for index, docs in enumerate(files):
        texts = pa.array([d["text"] for d in docs])
        ranks = document_ranks(pa.array([d["id"] for d in docs]), seed=7)
        out.append(Candidates.of_file(index, ranks, texts, char_lengths(texts), budget, 4192))
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


def _block(text: str, limit: int) -> tuple[bytes, int, int]:
    """What SentencePiece reads of a document, line by line (the reference for the vectorised blocks)."""
    lines = [x.rstrip("\r").encode() for x in text.split("\n")]
    lines = [x for x in lines if x]
    kept = [x for x in lines if len(x) <= limit]
    return b"".join(x + b"\n" for x in kept), len(kept), len(lines) - len(kept)


def test_training_blocks_are_the_nonempty_lines_within_the_limit():
    texts = ["a\r\n\nbé\n" + "x" * 70 + "\n", "", "\r\n\n", "éé\r\r", None] + [d["text"] for d in load_documents("github")[:40]]
    blocks, lines, too_long = training_blocks(pa.array(texts, pa.string()), 60)
    assert blocks[0].as_py() == "a\nbé\n".encode() and (lines[0], too_long[0]) == (2, 1)
    for i, text in enumerate(texts):
        assert (blocks[i].as_py(), lines[i], too_long[i]) == _block(text or "", 60)
    assert too_long.sum() > 0 and lines.sum() > 500


@pytest.mark.parametrize("chunk_bytes", [1, 50, 1 << 20])
def test_write_blocks_streams_the_chosen_blocks_in_order(chunk_bytes):
    import io

    from beam_jobs.tokenizer import write_blocks

    texts = [d["text"] for d in load_documents("stackexchange")[:30]] + [""]
    blocks, _, _ = training_blocks(pa.array(texts), 4192)
    index = np.array([3, 3, 0, 30, 7, 29, 29, 29])
    out = io.BytesIO()
    write_blocks(out, blocks, index, chunk_bytes)
    assert out.getvalue() == b"".join(blocks[int(i)].as_py() for i in index) and len(out.getvalue()) > 1000
