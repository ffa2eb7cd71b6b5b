from __future__ import annotations

import numpy as np
import pytest

from tok_independent_reader import read_documents, read_idx
from tokenizer.megatron import IndexedDataset, ShardWriter


def _write(prefix, docs, batches=2, sources=3):
    with ShardWriter(prefix) as w:
        for chunk in np.array_split(np.arange(len(docs)), batches):
            part = [docs[i] for i in chunk]
            tokens = np.concatenate([np.asarray(d, np.uint16) for d in part]) if part else np.zeros(0, np.uint16)
            w.add(tokens, [len(d) for d in part], sources)
    return w


def test_index_matches_an_independent_reader(tmp_path):
    docs = [[1, 5, 65535, 2], [1, 2], [1] + list(range(3, 300)) + [2], [7]]
    prefix = str(tmp_path / "shard")
    w = _write(prefix, docs)
    assert (w.documents, w.tokens) == (4, sum(map(len, docs)))
    idx = read_idx(prefix + ".idx")
    assert idx["magic"] == b"MMIDIDX\x00\x00" and idx["version"] == 1 and idx["dtype_code"] == 8
    assert idx["lengths"] == [len(d) for d in docs]
    assert idx["pointers"] == [0, 8, 12, 12 + 2 * 299]  # byte offsets of uint16 tokens
    assert idx["doc_idx"] == [0, 1, 2, 3, 4]
    assert idx["trailing_bytes"] == 0
    assert read_documents(prefix) == docs
    assert open(prefix + ".src", "rb").read() == bytes([3] * 4)
    ds = IndexedDataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    tokens, lengths = ds.gather([2, 0, 0])
    assert tokens.tolist() == docs[2] + docs[0] + docs[0] and lengths.tolist() == [299, 4, 4]


def test_empty_shard_is_valid(tmp_path):
    prefix = str(tmp_path / "empty")
    _write(prefix, [], batches=1)
    idx = read_idx(prefix + ".idx")
    assert idx["lengths"] == [] and idx["doc_idx"] == [0] and idx["trailing_bytes"] == 0
    assert len(IndexedDataset(prefix)) == 0


def test_writer_refuses_ids_beyond_uint16_and_inconsistent_lengths(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        with ShardWriter(str(tmp_path / "a")) as w:
            w.add(np.array([1, 70000]), [2])
    with pytest.raises(ValueError, match="lengths sum"):
        with ShardWriter(str(tmp_path / "b")) as w:
            w.add(np.array([1, 2, 3], np.uint16), [2])
    assert not list(tmp_path.glob("a.*")) and not list(tmp_path.glob("b.*"))  # nothing half-written


def test_reader_rejects_a_truncated_bin(tmp_path):
    prefix = str(tmp_path / "t")
    _write(prefix, [[1, 2, 3], [4, 5]])
    with open(prefix + ".bin", "r+b") as f:
        f.truncate(6)
    with pytest.raises(ValueError, match="the index says 10"):
        IndexedDataset(prefix)
