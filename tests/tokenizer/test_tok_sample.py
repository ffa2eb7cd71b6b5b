"""The tokenizer sample's training text: the lines SentencePiece reads, written in order."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conftest import load_documents
from tokenizer.sample import training_blocks


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

    from beam_jobs.train_tokenizer import write_blocks

    texts = [d["text"] for d in load_documents("stackexchange")[:30]] + [""]
    blocks, _, _ = training_blocks(pa.array(texts), 4192)
    index = np.array([3, 3, 0, 30, 7, 29, 29, 29])
    out = io.BytesIO()
    write_blocks(out, blocks, index, chunk_bytes)
    assert out.getvalue() == b"".join(blocks[int(i)].as_py() for i in index) and len(out.getvalue()) > 1000
