"""`corpusmill mix` says when it repeats data: a source planned past --max-epochs is named in the
summary and in manifest.json's "warnings"; below the threshold nothing is said.

Input: per-source token shards of the real texts in tests/data/tokenizer/ (commoncrawl: 58 documents,
wikipedia: 150), tokenised as bytes (token = byte + 3, BOS 1, EOS 2), so a source's size in tokens is
its UTF-8 bytes + 2 per document, counted here with plain Python.
"""
from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from beam_jobs.cli import main
from pipeline.schema import SOURCES
from tokenizer.megatron import FORMAT, ShardWriter, write_manifest
from tokenizer.mix import DEFAULT_MAX_EPOCHS, plan_mix, repeat_warnings

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "tokenizer")
ONE = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def byte_documents(source: str) -> list[list[int]]:
    with gzip.open(os.path.join(DATA, f"{source}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [[1] + [b + 3 for b in json.loads(line)["text"].encode("utf-8")] + [2] for line in f]


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory) -> tuple[str, dict[str, int]]:
    """A tokens folder like `corpusmill tokenize` writes: one shard per source, source-named, manifest."""
    out = str(tmp_path_factory.mktemp("tokens"))
    shards, sources = [], {}
    for source in ("commoncrawl", "wikipedia"):
        docs = byte_documents(source)
        prefix = f"{source}-00000"
        with ShardWriter(os.path.join(out, prefix)) as w:
            w.add(np.concatenate([np.asarray(d) for d in docs]), [len(d) for d in docs], SOURCES.index(source))
        shards.append({"prefix": prefix, "documents": len(docs), "tokens": w.tokens, "source": source})
        sources[source] = {"documents": len(docs), "tokens": w.tokens, "epochs": 1.0, "share": 0.0, "target": None}
    write_manifest(out, {
        "format": FORMAT, "dtype": "uint16", "tokenizer": {"path": "bytes+3", "sha256": "", "vocab_size": 259, "bos_id": 1, "eos_id": 2},
        "source_names": list(SOURCES), "shards": shards, "sources": sources,
        "total": {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards)},
    })  # fmt: skip
    sizes = {s: sum(len(d) for d in byte_documents(s)) for s in ("commoncrawl", "wikipedia")}
    return out, sizes


def run_mix(tokens: str, out: str, total: int, capsys, *extra: str) -> tuple[dict, str]:
    rc = main(["mix", "--input", tokens, "--output", out, "--tokens", str(total), "--shares", "commoncrawl=50,wikipedia=50",
               "--tolerance", "0.02", *extra, *ONE])  # fmt: skip
    assert rc == 0
    return json.load(open(os.path.join(out, "manifest.json"))), capsys.readouterr().out


def test_a_source_past_max_epochs_is_named_in_the_summary_and_the_manifest(tokens_dir, tmp_path, capsys):
    tokens, sizes = tokens_dir
    assert sizes == {"commoncrawl": 305_623, "wikipedia": 75_900}  # bytes + 2 per document of the bundled texts
    # 600,000 tokens at 50/50: commoncrawl 300,000 / 305,623 = 0.98 epochs, wikipedia 300,000 / 75,900 = 3.95.
    manifest, printed = run_mix(tokens, str(tmp_path / "mix"), 600_000, capsys)
    epochs = {s: v["epochs"] for s, v in manifest["sources"].items()}
    assert epochs["wikipedia"] == pytest.approx(300_000 / 75_900, abs=0.1) and epochs["commoncrawl"] < 1
    assert manifest["max_epochs"] == DEFAULT_MAX_EPOCHS == 2.5
    assert [(w["source"], w["max_epochs"]) for w in manifest["warnings"]] == [("wikipedia", 2.5)]
    assert manifest["warnings"][0]["epochs"] == epochs["wikipedia"]
    assert f"warning: wikipedia is repeated {epochs['wikipedia']:.1f} epochs (more than 2.5)" in printed
    assert "commoncrawl is repeated" not in printed

    # The threshold is configurable: 3.95 epochs are within --max-epochs 5.
    manifest, printed = run_mix(tokens, str(tmp_path / "mix5"), 600_000, capsys, "--max-epochs", "5")
    assert manifest["warnings"] == [] and "warning:" not in printed and "repeated" not in printed


def test_no_warning_below_the_threshold(tokens_dir, tmp_path, capsys):
    tokens, _ = tokens_dir
    # 300,000 tokens at 50/50: wikipedia 150,000 / 75,900 = 1.98 epochs, commoncrawl 0.49.
    manifest, printed = run_mix(tokens, str(tmp_path / "mix"), 300_000, capsys)
    assert max(v["epochs"] for v in manifest["sources"].values()) == pytest.approx(150_000 / 75_900, abs=0.1)
    assert manifest["warnings"] == [] and "warning:" not in printed and "repeated" not in printed


def test_repeat_warnings_compare_the_plan_with_the_threshold():
    lengths = {"commoncrawl": np.full(10, 100), "wikipedia": np.full(10, 100)}  # 1,000 tokens each
    plans = plan_mix(lengths, {"commoncrawl": 0.8, "wikipedia": 0.2}, 4_000, seed=0)  # 3.2 and 0.8 epochs
    assert [(w["source"], w["epochs"]) for w in repeat_warnings(plans, 2.5)] == [("commoncrawl", 3.2)]
    assert repeat_warnings(plans, 3.2) == []  # "more than": exactly at the threshold is no warning
