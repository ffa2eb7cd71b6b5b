"""`corpusmill tokenize`: each source's document shards -> token shards (Megatron indexed dataset).

A plan of one file phase (`pipeline/plan.py`): per (source, input file), read it row group by row
group, encode in big batches (SentencePiece threads), stream tokens into OUTPUT/<source>-NNNNN.bin,
then .idx and .src; then manifest.json (docs/token-shards.md) and stats.json (empty / whitespace-only
counted). A damaged row group is a dead letter and its documents a counted drop; a file whose footer
cannot be read is one dead letter and an empty token shard (`read_row_groups`).

One token shard per input file, named by the source and the file's place in that source's sorted
file list, so the output does not depend on the number of workers.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_jobs.common import beam_executor
from pipeline.accounting import StageStats
from pipeline.job import run_plan
from pipeline.plan import FilePhase, FileResult, Plan
from pipeline.runs import InputError, atomic_write_bytes
from pipeline.schema import SOURCES
from tokenizer import spm as spm_lib
from tokenizer.encode import EncodeConfig, encode_batch
from tokenizer.inputs import resolve_inputs
from tokenizer.megatron import ShardWriter

STAGE = "tokenize"
SHARD_EXTS = (".bin", ".idx", ".src")


def shard_prefix(source: str, index: int) -> str:
    return f"{source}-{index:05d}"


class TokenizePhase(FilePhase):
    """One input document shard -> one token shard `<source>-NNNNN` (NNNNN: its place in the source's files)."""

    name = "tokenize"

    def __init__(self, elements: list[tuple[str, int, str]], model_path: str, output: str, config: EncodeConfig, batch_docs: int):
        self.elements, self.model_path, self.output, self.config, self.batch_docs = elements, model_path, output, config, batch_docs
        self._sp = None


    def stages(self):
        return [STAGE]

    def run(self, file_index, path, work, barrier):
        if self._sp is None:
            self._sp = spm_lib.load(self.model_path)
        source, index, _ = self.elements[file_index]
        prefix = shard_prefix(source, index)
        stats = StageStats(STAGE)
        dead: list[dict] = []
        with ShardWriter(os.path.join(self.output, prefix), write_sources=True) as writer:
            for row_group, record, table in read_row_groups(path, stats, dead):
                texts, sources = table.column("text").combine_chunks(), table.column("source").combine_chunks()
                if pc.any(pc.not_equal(sources, source)).as_py():
                    wrong = int(np.flatnonzero(np.asarray(sources.to_pylist(), dtype=object) != source)[0])
                    raise InputError(f"{path}: record {record + wrong} has source {sources[wrong]}, expected {source!r}")
                for start in range(0, len(texts), self.batch_docs):
                    tokens, lengths, batch_stats = encode_batch(self._sp, texts.slice(start, self.batch_docs), self.config, STAGE)
                    if len(tokens) and int(tokens.max()) >= self._sp.get_piece_size():
                        raise ValueError(f"{path}: token id beyond the vocabulary")
                    writer.add(tokens, lengths, SOURCES.index(source))
                    stats.merge(batch_stats)
        shard = {"prefix": prefix, "source": source, "input": path, "documents": writer.documents, "tokens": writer.tokens}
        return FileResult(self.name, file_index, [stats.to_dict()], dead, {"shard": shard})


COLUMNS = ["source", "text"]


def read_row_groups(path: str, stats: StageStats, dead: list[dict]):
    """(row group, index of its first record, table of `source` and `text`) for each row group of a
    document shard that reads whole (and valid UTF-8); a damaged row group is a dead letter and its
    documents (the count its footer gives) are counted read and dropped as `unreadable_row_group`. A
    file whose footer or columns cannot be read is one `unreadable_file` dead letter
    (docs/reliability.md: the one policy for damaged input); its token shard is empty."""
    try:
        reader = pq.ParquetFile(path)
        missing = [c for c in COLUMNS if c not in reader.schema_arrow.names]
        if missing:
            raise ValueError(f"no column {', '.join(map(repr, missing))}: not a document shard")
        sizes = [reader.metadata.row_group(i).num_rows for i in range(reader.num_row_groups)]
    except Exception as err:  # noqa: BLE001 - whatever the footer's damage raises, the file is one dead letter
        stats.docs_in += 1
        stats.drop("unreadable_file")
        dead.append({"file": path, "reason": "unreadable_file", "error": _message(err)})
        return
    record = 0
    for row_group, n in enumerate(sizes):
        try:
            table = reader.read_row_group(row_group, columns=COLUMNS)
            table.validate(full=True)  # UTF-8 of every string: damage can decode to bytes that are not text
        except Exception as err:  # noqa: BLE001 - a damaged page raises OSError, ArrowInvalid, ... from pyarrow
            stats.docs_in += n
            stats.drop("unreadable_row_group", n)
            dead.append({"file": path, "row_group": row_group, "record": record, "documents": n,
                         "reason": "unreadable_row_group", "error": _message(err)})
        else:
            yield row_group, record, table
        record += n


def _message(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]


def build_manifest(shards: list[dict], tokenizer: dict) -> dict:
    """The manifest of docs/token-shards.md for unmixed shards: shares are the sources' natural ones, no target."""
    shards = sorted(shards, key=lambda s: (SOURCES.index(s["source"]), s["prefix"]))
    names = [s for s in SOURCES if any(x["source"] == s for x in shards)]
    total_docs = sum(s["documents"] for s in shards)
    total_tokens = sum(s["tokens"] for s in shards)
    sources = {}
    for name in names:
        docs = sum(s["documents"] for s in shards if s["source"] == name)
        tokens = sum(s["tokens"] for s in shards if s["source"] == name)
        sources[name] = {"documents": docs, "tokens": tokens, "epochs": 1.0,
                         "share": tokens / total_tokens if total_tokens else 0.0, "target": None}
    return {
        "format": "megatron-mmidx-v1",
        "dtype": "uint16",
        "tokenizer": tokenizer,
        # .src bytes index SOURCES, so the list is the full fixed one, not only the sources present.
        "source_names": list(SOURCES),
        "shards": [{"prefix": s["prefix"], "documents": s["documents"], "tokens": s["tokens"], "source": s["source"], "input": s["input"]} for s in shards],
        "sources": sources,
        "total": {"documents": total_docs, "tokens": total_tokens},
    }


def tokenizer_card(model_path: str) -> dict:
    sp = spm_lib.load(model_path)
    if sp.get_piece_size() > (1 << 16):
        raise ValueError(f"{model_path}: vocabulary of {sp.get_piece_size()} does not fit uint16 token shards")
    return {"path": os.path.abspath(model_path), "sha256": spm_lib.file_sha256(model_path), "vocab_size": sp.get_piece_size(),
            "bos_id": sp.bos_id(), "eos_id": sp.eos_id()}


def remove_stale_shards(output: str, keep: set[str]) -> None:
    """Token shards an earlier run with other inputs left behind (finalize only cleans part-* files)."""
    for name in os.listdir(output):
        stem, ext = os.path.splitext(name)
        if ext in SHARD_EXTS and stem not in keep and stem.split("-")[0] in SOURCES:
            os.remove(os.path.join(output, name))


def close(output: str, tokenizer: dict):
    """Before stats.json: the manifest, and the token shards of earlier runs removed."""

    def write_manifest(results) -> tuple[dict, list[str]]:
        manifest = build_manifest([r.summary["shard"] for r in results], tokenizer)
        remove_stale_shards(output, {s["prefix"] for s in manifest["shards"]})
        atomic_write_bytes(os.path.join(output, "manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode())
        files = ["manifest.json"] + [s["prefix"] + ext for s in manifest["shards"] for ext in SHARD_EXTS]
        return {"sources": manifest["sources"]}, files

    return write_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=None, help="run folder whose sub-folders are finished source jobs (e.g. runs/demo)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=GLOB", help="a source's document shards (repeatable; overrides --input)")
    parser.add_argument("--tokenizer", required=True, help="SentencePiece .model (from corpusmill train-tokenizer)")
    parser.add_argument("--output", required=True, help="folder for <source>-NNNNN.{bin,idx,src}, manifest.json, stats.json")
    parser.add_argument("--no-bos", action="store_true", help="do not start each document with BOS")
    parser.add_argument("--no-eos", action="store_true", help="do not end each document with EOS")
    parser.add_argument("--threads", type=int, default=1, help="SentencePiece encoding threads per worker (default: %(default)s)")
    parser.add_argument("--batch-docs", type=int, default=4096, help="documents per encode call (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def run(args, beam_args: list[str]) -> int:
    inputs = resolve_inputs(args.input, args.source)
    if not os.path.isfile(args.tokenizer):
        raise FileNotFoundError(f"{args.tokenizer}: no tokenizer model (run corpusmill train-tokenizer)")
    config = EncodeConfig(add_bos=not args.no_bos, add_eos=not args.no_eos, threads=args.threads)
    elements = [(source, i, path) for source, paths in inputs.items() for i, path in enumerate(paths)]
    settings = {"add_bos": config.add_bos, "add_eos": config.add_eos, "tokenizer_sha256": spm_lib.file_sha256(args.tokenizer),
                "sources": {s: len(v) for s, v in inputs.items()}}
    os.makedirs(args.output, exist_ok=True)
    started = time.time()
    plan = Plan("tokenize", [TokenizePhase(elements, args.tokenizer, args.output, config, args.batch_docs)])
    stats = run_plan(plan, [p for _, _, p in elements], args.output, settings, force=args.force, executor=beam_executor(beam_args),
                     close=close(args.output, tokenizer_card(args.tokenizer)))
    if stats is None:
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        return 0
    print(f"tokenize: {stats['read']} documents read, {stats['kept']} written -> {args.output} ({time.time() - started:.1f} s)")
    for reason, n in stats["dropped"].items():
        print(f"  not written ({reason}): {n}")
    for name, s in stats["sources"].items():
        print(f"  {name:<14} {s['documents']:>9} documents {s['tokens']:>12} tokens ({s['share']:.1%})")
    return 0
