"""Fixtures: a run folder of per-source document shards (the real schema) built from the real text
bundled in tests/data/tokenizer/ (provenance: its README.md), and a small tokenizer trained on it."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pytest

from pipeline.accounting import JobStats, StageStats
from pipeline.runs import write_parquet
from pipeline.schema import SOURCES, document_id, to_document_table

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "tokenizer")
# The folder names the source jobs use (the source is read from the `source` column, not from these).
FOLDERS = {"commoncrawl": "ccnet", "c4": "c4", "github": "github", "wikipedia": "wikipedia", "books": "books",
           "arxiv": "arxiv", "stackexchange": "stackexchange"}


def load_documents(source: str) -> list[dict]:
    with gzip.open(os.path.join(DATA, f"{source}.jsonl.gz"), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [
        {"id": document_id(source, r["native_id"]), "source": source, "url": r.get("url"), "text": r["text"],
         "metadata": json.dumps(r.get("metadata") or {}, sort_keys=True)}
        for r in rows
    ]


def write_source(folder: str, source: str, docs: list[dict], parts: int = 2) -> None:
    os.makedirs(folder, exist_ok=True)
    size = -(-len(docs) // parts)
    for i in range(parts):
        table = to_document_table(pa.Table.from_pylist(docs[i * size : (i + 1) * size]))
        write_parquet(table, os.path.join(folder, f"part-{i:05d}.parquet"))
    stage = StageStats("read", docs_in=len(docs), docs_out=len(docs))
    with open(os.path.join(folder, "stats.json"), "w") as f:
        f.write(JobStats(f"test-{source}", [stage]).to_json())


def make_run(root: str, sources=SOURCES, extra_docs: dict | None = None) -> str:
    for source in sources:
        docs = load_documents(source) + list((extra_docs or {}).get(source, []))
        write_source(os.path.join(root, FOLDERS[source]), source, docs)
    return root


@pytest.fixture(scope="session")
def doc_run(tmp_path_factory) -> str:
    # Real documents plus an empty one and a whitespace-only one, which must be counted, not written.
    blanks = {"c4": [{"id": document_id("c4", "blank-empty"), "source": "c4", "text": "", "metadata": "{}"},
                     {"id": document_id("c4", "blank-ws"), "source": "c4", "text": " \n\t  \n", "metadata": "{}"}]}
    return make_run(str(tmp_path_factory.mktemp("docs")), extra_docs=blanks)


@pytest.fixture(scope="session")
def tokenizer_model(doc_run, tmp_path_factory) -> str:
    from beam_jobs import train_tokenizer as job
    from beam_jobs.cli import main

    out = str(tmp_path_factory.mktemp("tok"))
    rc = main(["train-tokenizer", "--input", doc_run, "--output", out, "--vocab-size", "1200", "--sample-chars", "400000",
               "--threads", "2", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    assert rc == 0
    return os.path.join(out, job.MODEL_NAME + ".model")
