from __future__ import annotations

import numpy as np
import pytest

import json
import struct

from tok_independent_reader import read_documents, read_idx
from tokenizer.megatron import IndexedDataset, ShardFormatError, ShardWriter, read_index, read_manifest, write_token_folder


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


def _idx(lengths, pointers, dtype_code=8) -> bytes:
    """An index exactly as docs/token-shards.md lays it out, with struct (not the module's writer)."""
    n = len(lengths)
    return (b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, dtype_code, n, n + 1) + struct.pack(f"<{n}i", *lengths)
            + struct.pack(f"<{n}q", *pointers) + struct.pack(f"<{n + 1}q", *range(n + 1)))


def test_read_index_memory_maps_and_checks_the_layout(tmp_path):
    path = tmp_path / "s.idx"
    path.write_bytes(_idx([4, 2, 3], [0, 8, 12]))
    index = read_index(str(path))
    assert index.lengths.tolist() == [4, 2, 3] and index.pointers.tolist() == [0, 8, 12]
    assert (len(index), index.tokens, index.bin_bytes, index.dtype) == (3, 9, 18, np.dtype("<u2"))
    bad = {
        "not contiguous": _idx([4, 2], [0, 6]),
        "negative sequence length": _idx([4, -2], [0, 8]),
        "unknown dtype code 9": _idx([1], [0], dtype_code=9),
        "index size": _idx([4, 2], [0, 8])[:-8],
        "bad magic": b"MMIDIDY\x00\x00" + _idx([1], [0])[9:],
    }
    for message, data in bad.items():
        path.write_bytes(data)
        with pytest.raises(ShardFormatError, match=message) as err:
            read_index(str(path))
        assert str(path) in str(err.value)  # the message names the file


def test_src_must_have_one_entry_per_document(tmp_path):
    prefix = str(tmp_path / "s")
    _write(prefix, [[1, 2], [3]])
    with open(prefix + ".src", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ShardFormatError, match="3 entries for 2 documents"):
        IndexedDataset(prefix)


def test_write_token_folder_and_read_manifest(tmp_path):
    docs = [[1, 10, 2], [1, 11, 12, 2], [1, 2], [1, 65535, 2], [1, 7, 2]]
    tokenizer = {"path": "t.model", "sha256": "", "vocab_size": 65536, "bos_id": 1, "eos_id": 2}
    manifest_path = write_token_folder(str(tmp_path), docs, tokenizer, docs_per_shard=2)
    manifest = read_manifest(str(tmp_path))
    assert manifest == json.load(open(manifest_path))
    assert [s["prefix"] for s in manifest["shards"]] == ["mixed-00000", "mixed-00001", "mixed-00002"]
    assert [s["documents"] for s in manifest["shards"]] == [2, 2, 1] and manifest["total"] == {"documents": 5, "tokens": 15}
    assert manifest["tokenizer"] == tokenizer
    read_back = [d for s in manifest["shards"] for d in read_documents(str(tmp_path / s["prefix"]))]
    assert read_back == docs
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "dtype": "uint32"}))
    with pytest.raises(ShardFormatError, match="manifest.json: format 'megatron-mmidx-v1' dtype 'uint32'"):
        read_manifest(str(tmp_path))
