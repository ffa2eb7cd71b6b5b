"""End to end: train-tokenizer -> tokenize -> mix on the bundled real documents, through the CLI."""
from __future__ import annotations

import glob
import json
import os

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import FOLDERS, make_run
from beam_jobs.cli import main
from pipeline.schema import SOURCES
from tok_independent_reader import read_documents, read_idx
from tokenizer import spm as spm_lib

ONE = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
TWO = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def _bytes(folder: str, pattern: str = "*") -> dict:
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(folder, pattern)))
            if not p.endswith("stats.json")}


@pytest.fixture(scope="module")
def tokens_dir(doc_run, tokenizer_model, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("tokens"))
    assert main(["tokenize", "--input", doc_run, "--tokenizer", tokenizer_model, "--output", out, "--batch-docs", "64", *ONE]) == 0
    return out


@pytest.fixture(scope="module")
def mix_dir(tokens_dir, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("mix"))
    assert main(["mix", "--input", tokens_dir, "--output", out, "--tokens", "300000", "--shard-tokens", "60000", *ONE]) == 0
    return out


def test_tokenizer_sample_follows_the_mix_and_is_deterministic(doc_run, tokenizer_model, tmp_path):
    folder = os.path.dirname(tokenizer_model)
    card = json.load(open(os.path.join(folder, "tokenizer.json")))
    assert list(card["sample"]) == list(SOURCES)
    for name, entry in card["sample"].items():
        # Whole documents: each source lands near its budget (its share of 400,000 characters).
        assert entry["chars"] >= entry["budget"] or entry["epochs"] >= 1
        assert abs(entry["share"] - {"commoncrawl": .67, "c4": .15, "github": .045, "wikipedia": .045, "books": .045,
                                     "arxiv": .025, "stackexchange": .02}[name]) < 0.03
    stats = json.load(open(os.path.join(folder, "stats.json")))
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    # Two workers, multiprocessing: the same sample files and the same model bytes.
    out = str(tmp_path / "tok2")
    assert main(["train-tokenizer", "--input", doc_run, "--output", out, "--vocab-size", "1200", "--sample-chars", "400000",
                 "--threads", "2", *TWO]) == 0
    assert _bytes(os.path.join(folder, "sample")) == _bytes(os.path.join(out, "sample"))
    assert spm_lib.file_sha256(os.path.join(out, "tokenizer.model")) == card["sha256"]


def test_shards_decode_back_to_the_documents(doc_run, tokenizer_model, tokens_dir):
    sp = spm_lib.load(tokenizer_model)
    manifest = json.load(open(os.path.join(tokens_dir, "manifest.json")))
    assert manifest["format"] == "megatron-mmidx-v1" and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["sha256"] == spm_lib.file_sha256(tokenizer_model)
    assert (manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"], manifest["tokenizer"]["vocab_size"]) == (1, 2, 1200)
    checked = 0
    for shard in manifest["shards"]:
        texts = [t for t in pq.read_table(shard["input"], columns=["text"]).column("text").to_pylist() if t.strip()]
        docs = read_documents(os.path.join(tokens_dir, shard["prefix"]))
        assert len(docs) == len(texts) == shard["documents"]
        for ids, text in zip(docs, texts):
            assert ids[0] == 1 and ids[-1] == 2
            assert sp.decode(ids[1:-1]) == text
            checked += 1
        src = open(os.path.join(tokens_dir, shard["prefix"] + ".src"), "rb").read()
        assert set(src) <= {SOURCES.index(shard["source"])}
    assert checked == manifest["total"]["documents"] > 400


def test_idx_matches_the_independent_reader(tokens_dir):
    for idx_path in sorted(glob.glob(os.path.join(tokens_dir, "*.idx"))):
        idx = read_idx(idx_path)
        assert idx["magic"] == b"MMIDIDX\x00\x00" and idx["version"] == 1 and idx["dtype_code"] == 8
        assert idx["doc_idx"] == list(range(len(idx["lengths"]) + 1)) and idx["trailing_bytes"] == 0
        assert idx["pointers"] == [2 * x for x in np.concatenate([[0], np.cumsum(idx["lengths"])[:-1]]).astype(int).tolist()][: len(idx["lengths"])]
        assert os.path.getsize(idx_path[:-4] + ".bin") == 2 * sum(idx["lengths"])


def test_empty_and_whitespace_documents_are_counted_not_written(tokens_dir):
    stats = json.load(open(os.path.join(tokens_dir, "stats.json")))
    # The fixture adds one empty and one whitespace-only c4 document; github holds one empty real file.
    assert stats["dropped"] == {"empty": 2, "whitespace_only": 1}
    assert stats["read"] == stats["kept"] + 3
    manifest = json.load(open(os.path.join(tokens_dir, "manifest.json")))
    assert manifest["sources"]["c4"]["documents"] == 30 and manifest["total"]["documents"] == stats["kept"]


def test_manifest_shares_recomputed_from_the_mixed_shards_alone(mix_dir, tokens_dir):
    manifest = json.load(open(os.path.join(mix_dir, "manifest.json")))
    assert len(manifest["shards"]) > 2
    names = manifest["source_names"]
    tokens = np.zeros(len(names), np.int64)
    documents = np.zeros(len(names), np.int64)
    for shard in manifest["shards"]:
        lengths = np.array(read_idx(os.path.join(mix_dir, shard["prefix"] + ".idx"))["lengths"])
        src = np.frombuffer(open(os.path.join(mix_dir, shard["prefix"] + ".src"), "rb").read(), np.uint8)
        assert len(src) == len(lengths) == shard["documents"] and lengths.sum() == shard["tokens"]
        np.add.at(tokens, src, lengths)
        np.add.at(documents, src, 1)
    assert tokens.sum() == manifest["total"]["tokens"] and documents.sum() == manifest["total"]["documents"]
    assert abs(manifest["total"]["tokens"] - 300_000) < 3_000
    for name, entry in manifest["sources"].items():
        share = tokens[names.index(name)] / tokens.sum()
        assert abs(share - entry["target"]) <= 0.005, name
        assert share == pytest.approx(entry["share"]) and tokens[names.index(name)] == entry["tokens"]
        assert documents[names.index(name)] == entry["documents"]
    assert manifest["sources"]["commoncrawl"]["epochs"] > 1 and manifest["sources"]["stackexchange"]["epochs"] < 1
    token_manifest = json.load(open(os.path.join(tokens_dir, "manifest.json")))
    assert manifest["tokenizer"] == token_manifest["tokenizer"]


def test_mixed_documents_are_whole_source_documents(mix_dir, tokens_dir):
    source_docs = {}
    token_manifest = json.load(open(os.path.join(tokens_dir, "manifest.json")))
    for shard in token_manifest["shards"]:
        for doc in read_documents(os.path.join(tokens_dir, shard["prefix"])):
            source_docs.setdefault(tuple(doc), shard["source"])
    manifest = json.load(open(os.path.join(mix_dir, "manifest.json")))
    for shard in manifest["shards"]:
        src = open(os.path.join(mix_dir, shard["prefix"] + ".src"), "rb").read()
        for doc, s in zip(read_documents(os.path.join(mix_dir, shard["prefix"])), src):
            assert source_docs[tuple(doc)] == manifest["source_names"][s]


def test_one_and_two_workers_write_identical_shards(doc_run, tokenizer_model, tokens_dir, mix_dir, tmp_path):
    tokens2, mix2 = str(tmp_path / "tokens2"), str(tmp_path / "mix2")
    assert main(["tokenize", "--input", doc_run, "--tokenizer", tokenizer_model, "--output", tokens2, "--batch-docs", "64", *TWO]) == 0
    assert _bytes(tokens2, "*-0000*") == _bytes(tokens_dir, "*-0000*")
    m1, m2 = (json.load(open(os.path.join(d, "manifest.json"))) for d in (tokens_dir, tokens2))
    assert m1["shards"] == m2["shards"] and m1["sources"] == m2["sources"]
    assert main(["mix", "--input", tokens2, "--output", mix2, "--tokens", "300000", "--shard-tokens", "60000", *TWO]) == 0
    assert _bytes(mix2, "mixed-*") == _bytes(mix_dir, "mixed-*")


def test_missing_source_fails_clearly_unless_renormalised(tmp_path, tokenizer_model, capsys):
    run = make_run(str(tmp_path / "docs"), sources=("commoncrawl", "wikipedia"))
    tokens = str(tmp_path / "tokens")
    assert main(["tokenize", "--input", run, "--tokenizer", tokenizer_model, "--output", tokens, *ONE]) == 0
    assert main(["mix", "--input", tokens, "--output", str(tmp_path / "mix"), *ONE]) == 2
    assert "missing source(s) c4, github, books, arxiv, stackexchange" in capsys.readouterr().err
    assert main(["mix", "--input", tokens, "--output", str(tmp_path / "mix"), "--renormalize", *ONE]) == 0
    manifest = json.load(open(tmp_path / "mix" / "manifest.json"))
    assert list(manifest["sources"]) == ["commoncrawl", "wikipedia"]
    assert manifest["sources"]["wikipedia"]["target"] == pytest.approx(0.045 / 0.715)
    # A rerun with the same inputs and config does nothing.
    assert main(["mix", "--input", tokens, "--output", str(tmp_path / "mix"), "--renormalize", *ONE]) == 0
    assert "up to date" in capsys.readouterr().out


def test_two_folders_of_one_source_must_be_named(tmp_path, tokenizer_model):
    run = make_run(str(tmp_path / "docs"), sources=("wikipedia",))
    os.rename(os.path.join(run, FOLDERS["wikipedia"]), os.path.join(run, "wiki-a"))
    make_run(str(tmp_path / "docs"), sources=("wikipedia",))
    assert main(["tokenize", "--input", run, "--tokenizer", tokenizer_model, "--output", str(tmp_path / "t"), *ONE]) == 2
    wiki = os.path.join(run, "wiki-a", "part-*.parquet")
    assert main(["tokenize", "--input", run, "--source", f"wikipedia={wiki}", "--tokenizer", tokenizer_model,
                 "--output", str(tmp_path / "t"), *ONE]) == 2  # still ambiguous through --input
    assert main(["tokenize", "--source", f"wikipedia={wiki}", "--tokenizer", tokenizer_model, "--output", str(tmp_path / "t"), *ONE]) == 0


@pytest.mark.slow
def test_tokenize_and_mix_killed_and_replayed_give_the_same_bytes(doc_run, tokenizer_model, tokens_dir, mix_dir, tmp_path):
    """SIGKILL of the process group after some shards are done (the jobs' own markers), then the same
    command: the same bytes as the uninterrupted run (tests/test_reliability_kill.py's helpers)."""
    from tests.test_reliability_kill import corpusmill, files, kill_at, run_to_end

    tokens = tmp_path / "tokens"
    args = ["tokenize", "--input", doc_run, "--tokenizer", tokenizer_model, "--batch-docs", "64"]
    for point in (3, 9):
        kill_at(corpusmill(args, tokens, ONE), tokens, point)
    run_to_end(corpusmill(args, tokens, ONE))
    assert files(tokens) == {p.name: p.read_bytes() for p in sorted(Path(tokens_dir).iterdir())}
    mixed = tmp_path / "mix"
    args = ["mix", "--input", tokens_dir, "--tokens", "300000", "--shard-tokens", "60000"]
    kill_at(corpusmill(args, mixed, ONE), mixed, 2)
    run_to_end(corpusmill(args, mixed, ONE))
    assert files(mixed) == {p.name: p.read_bytes() for p in sorted(Path(mix_dir).iterdir())}
