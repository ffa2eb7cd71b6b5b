"""`corpusmill train-tokenizer`: sample training text from the curated sources in the mix's
proportions (deterministic), then train a SentencePiece BPE model with the LLaMA trainer_spec.

Graph (one pass over the sources):
    (source, file) -> ReadCandidates: ids ranked by a seeded hash, lengths, training lines of the
        documents the selection may take (`tokenizer.sample.Candidates`)
        -> CombinePerKey(source) (keeps about one budget of text per source)
        -> WriteSourceSample: OUTPUT/sample/<source>.txt, documents in input order, each as many times
           as selected -> OUTPUT/.tmp-sample.json (per-source figures and stats)
Then, in this process once the pipeline is done, SentencePiece trains on the sample files with all
its threads (not inside a Beam worker, where it would share the cores with idle worker processes):
    -> OUTPUT/tokenizer.model, .vocab, tokenizer.json (sample, trainer_spec, timings), stats.json

The sample files are named by source and hold documents in input order, so the sample (and the
model trained on it) is the same whatever the number of workers.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sentencepiece as spm

from beam_jobs.common import pipeline_options
from pipeline.accounting import JobStats, StageStats, merge_stage_stats
from pipeline.runs import atomic_output, atomic_write_bytes, finalize, input_fingerprint, is_complete, load_stats
from pipeline.schema import SOURCES
from tokenizer import spm as spm_lib
from tokenizer.inputs import parse_shares, resolve_inputs, target_shares
from tokenizer.sample import Candidates, char_lengths, document_ranks

STAGE = "sample"
SAMPLE_DIR = "sample"
MODEL_NAME = "tokenizer"
SAMPLE_REPORT = ".tmp-sample.json"  # pipeline -> driver hand-off; `finalize` removes it
# Below this much input (Parquet bytes), and unless Beam options say otherwise, sample in one
# process: starting the DirectRunner's worker processes costs ~2.5 s on a 2-core machine, more than
# a second worker saves on ~0.25 GB of Parquet (measured: 32 MB of Parquet, 100 M characters, take
# 0.8 s of sampling work).
ONE_PROCESS_INPUT_BYTES = 256 << 20


def sample_name(source: str) -> str:
    return f"{SAMPLE_DIR}/{source}.txt"


class ReadCandidates(beam.DoFn):
    def __init__(self, seed: int, budgets: dict[str, int], max_sentence_bytes: int):
        self.seed, self.budgets, self.max_sentence_bytes = seed, budgets, max_sentence_bytes

    def process(self, element):
        source, index, path = element
        table = pq.read_table(path, columns=["id", "text"])
        texts = table.column("text").combine_chunks()
        yield source, Candidates.of_file(index, document_ranks(table.column("id").combine_chunks(), self.seed), texts,
                                         char_lengths(texts), self.budgets[source], self.max_sentence_bytes)


class MergeCandidates(beam.CombineFn):
    """Per source: its files' candidates, cut to its budget as they merge."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, item):
        return item if acc is None else acc.merge(item)

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is not None:
                merged = acc if merged is None else merged.merge(acc)
        return merged

    def extract_output(self, acc):
        return acc


def write_blocks(out, blocks: pa.Array, index: np.ndarray, chunk_bytes: int = 64 << 20) -> None:
    """Writes blocks[index] one after another, a chunk of about `chunk_bytes` at a time."""
    sizes = pc.binary_length(blocks).to_numpy(zero_copy_only=False).astype(np.int64)[index]
    ends = np.cumsum(sizes)
    start = 0
    while start < len(index):
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + chunk_bytes, side="right")), start + 1)
        chunk = blocks.take(pa.array(index[start:stop], pa.int64()))
        offsets = np.frombuffer(chunk.buffers()[1], np.int64)
        out.write(memoryview(chunk.buffers()[2])[: offsets[len(chunk)]] if offsets[len(chunk)] else b"")
        start = stop


class WriteSourceSample(beam.DoFn):
    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        source, found = element
        selection = found.selection()
        copies = selection.copies_of(found.ranks)
        chosen = np.flatnonzero(copies > 0)
        chosen = chosen[np.argsort(found.order[chosen], kind="stable")]  # input order
        name = sample_name(source)
        with atomic_output(os.path.join(self.output, name)) as out:
            write_blocks(out, found.blocks, np.repeat(chosen, copies[chosen]))
        stats = StageStats(STAGE, docs_in=found.docs, docs_out=len(chosen), chars_in=found.chars,
                           chars_out=int((found.lengths[chosen] * copies[chosen]).sum()),
                           lines_out=int((found.lines[chosen] * copies[chosen]).sum()))
        stats.drop("empty", found.empty)
        stats.drop("not_sampled", found.docs - found.empty - len(chosen))
        too_long = int(found.too_long[chosen].sum())
        if too_long:
            stats.notes["sentences_over_max_length"] = too_long
        yield {"source": source, "file": name, "stats": stats.to_dict(), "documents": stats.docs_out, "chars": stats.chars_out,
               "sentences": stats.lines_out, "budget": found.budget, "available_chars": selection.available_chars}


class WriteReport(beam.DoFn):
    def __init__(self, output: str):
        self.output = output

    def process(self, _, written):
        report = sorted(written, key=lambda w: SOURCES.index(w["source"]))
        atomic_write_bytes(os.path.join(self.output, SAMPLE_REPORT), json.dumps(report).encode())
        yield len(report)


def build(p, inputs: dict[str, list[str]], output: str, budgets: dict[str, int], seed: int, max_sentence_bytes: int):
    elements = [(source, i, path) for source, paths in inputs.items() for i, path in enumerate(paths)]
    written = (
        p
        | "Files" >> beam.Create(elements)
        | "Spread" >> beam.Reshuffle()
        | "ReadCandidates" >> beam.ParDo(ReadCandidates(seed, budgets, max_sentence_bytes))
        | "Merge" >> beam.CombinePerKey(MergeCandidates())
        | "WriteSourceSample" >> beam.ParDo(WriteSourceSample(output))
    )
    return p | "Start" >> beam.Create([None]) | "WriteReport" >> beam.ParDo(WriteReport(output), beam.pvalue.AsList(written))


def train(output: str, report: list[dict], vocab_size: int, threads: int, seed: int, extra: dict) -> dict:
    """Trains on the sample files the pipeline wrote, in this process; writes the model, card, stats.json."""
    files = [w["file"] for w in report]
    inputs = [os.path.join(output, f) for f in files if os.path.getsize(os.path.join(output, f))]
    if not inputs:
        raise ValueError("the tokenizer sample is empty: no documents with text in the sources")
    spm.set_random_generator_seed(seed)
    prefix = os.path.join(output, f".tmp-{MODEL_NAME}")
    started = time.perf_counter()
    spm_lib.train(",".join(inputs), prefix, vocab_size, threads)
    seconds = time.perf_counter() - started
    model = os.path.join(output, MODEL_NAME + ".model")
    # The trainer records the absolute input and output paths in the model; record them relative
    # to OUTPUT, so that the model's bytes (and checksum) depend on the sample only.
    proto = spm_lib.model_proto(prefix + ".model")
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.extend(sorted(os.path.relpath(f, output) for f in inputs))
    proto.trainer_spec.model_prefix = MODEL_NAME
    atomic_write_bytes(model, proto.SerializeToString(deterministic=True))
    os.remove(prefix + ".model")
    os.replace(prefix + ".vocab", os.path.join(output, MODEL_NAME + ".vocab"))
    total_chars = sum(w["chars"] for w in report)
    sample = {
        w["source"]: {"documents": w["documents"], "chars": w["chars"], "sentences": w["sentences"],
                      "share": w["chars"] / total_chars if total_chars else 0.0, "budget": w["budget"],
                      "available_chars": w["available_chars"],
                      "epochs": w["chars"] / w["available_chars"] if w["available_chars"] else 0.0}
        for w in report
    }
    card = {
        "model": MODEL_NAME + ".model",
        "sha256": spm_lib.file_sha256(model),
        "vocab_size": vocab_size,
        "trainer_spec": {k: v for k, v in spm_lib.trainer_kwargs(vocab_size, threads).items() if k != "num_threads"},
        "sample": sample,
        "sample_files": files,
        "train_seconds": round(seconds, 3),
        **extra,
    }
    atomic_write_bytes(os.path.join(output, "tokenizer.json"), (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode())
    merged = merge_stage_stats(StageStats.from_dict(w["stats"]) for w in report)
    job = JobStats.from_merged("train-tokenizer", [STAGE], merged, **{k: v for k, v in extra.items() if k != "sample_seconds"})
    job.extra.update(sha256=card["sha256"], sample=sample, sample_seconds=extra.get("sample_seconds"), train_seconds=card["train_seconds"])
    finalize(output, job, files + [MODEL_NAME + ".model", MODEL_NAME + ".vocab", "tokenizer.json"], [])
    return card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", default=None, help="run folder whose sub-folders are finished source jobs (e.g. runs/demo)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME=GLOB", help="a source's document shards (repeatable; overrides --input)")
    parser.add_argument("--output", required=True, help="folder for tokenizer.model/.vocab, tokenizer.json, sample/, stats.json")
    parser.add_argument("--vocab-size", type=int, default=32000, help="(LLaMA: %(default)s)")
    parser.add_argument("--sample-chars", type=int, default=50_000_000, help="characters of training text to sample (default: %(default)s)")
    parser.add_argument("--shares", default=None, help="mix proportions, e.g. commoncrawl=67,c4=15,... (default: LLaMA's)")
    parser.add_argument("--renormalize", action="store_true", help="spread the share of missing sources over the present ones")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="SentencePiece trainer threads (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if OUTPUT holds a model from the same inputs and config")


def run(args, beam_args: list[str]) -> int:
    inputs = resolve_inputs(args.input, args.source)
    targets = target_shares(parse_shares(args.shares), list(inputs), args.renormalize)
    inputs = {s: inputs[s] for s in targets}
    budgets = {s: int(round(share * args.sample_chars)) for s, share in targets.items()}
    max_sentence_bytes = spm_lib.LLAMA_TRAINER_SPEC["max_sentence_length"]
    settings = {"vocab_size": args.vocab_size, "sample_chars": args.sample_chars, "targets": targets, "seed": args.seed}
    fingerprint = input_fingerprint([p for ps in inputs.values() for p in ps], settings)
    if not args.force and is_complete(args.output, fingerprint):
        print(f"{args.output}: up to date (same inputs and config); --force retrains")
        return 0
    os.makedirs(os.path.join(args.output, SAMPLE_DIR), exist_ok=True)
    for name in os.listdir(os.path.join(args.output, SAMPLE_DIR)):  # a sample from other inputs must not be trained on
        os.remove(os.path.join(args.output, SAMPLE_DIR, name))
    beam_args = list(beam_args)
    paths = [p for ps in inputs.values() for p in ps]
    local = not any("://" in p for p in paths)
    if local and sum(map(os.path.getsize, paths)) < ONE_PROCESS_INPUT_BYTES and not any(a.startswith(("--runner", "--direct_num_workers", "--direct_running_mode")) for a in beam_args):
        beam_args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    started = time.perf_counter()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        build(p, inputs, args.output, budgets, args.seed, max_sentence_bytes)
    with open(os.path.join(args.output, SAMPLE_REPORT)) as f:
        report = json.load(f)
    sample_seconds = round(time.perf_counter() - started, 3)
    train(args.output, report, args.vocab_size, args.threads, args.seed,
          {"fingerprint": fingerprint, "config": settings, "sample_seconds": sample_seconds})
    stats = load_stats(args.output)
    print(f"train-tokenizer: vocab {args.vocab_size}, sample of {stats['kept']} documents -> {args.output}/{MODEL_NAME}.model "
          f"({time.perf_counter() - started:.1f} s: sampling {sample_seconds:.1f} s, training {stats['train_seconds']:.1f} s)")
    for name, s in stats["sample"].items():
        print(f"  {name:<14} {s['documents']:>8} documents {s['chars']:>12} chars ({s['share']:.1%}, epochs {s['epochs']:.2f})")
    return 0
