"""`corpusmill train-tokenizer`: sample training text from the curated sources in the mix's
proportions (deterministic), then train a SentencePiece BPE model with the LLaMA trainer_spec.

Graph:
    (source, file) -> RankFile (seeded hash of each id, character length)
        -> CombinePerKey(source) -> per-source selection (copies + rank threshold), side input
    (source, file) -> WriteSample: the selected documents' lines -> OUTPUT/sample/<source>-NNNNN.txt
        -> Train (one step, SentencePiece's own threads) -> OUTPUT/tokenizer.model, .vocab,
           tokenizer.json (sample and trainer_spec), stats.json

The sample files are named by source and input file, and hold documents in file order, so the
sample (and the model trained on it) is the same whatever the number of workers.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import sentencepiece as spm

from beam_jobs.common import STATS, MergeStats, pipeline_options
from pipeline.accounting import JobStats, StageStats
from pipeline.runs import atomic_output, atomic_write_bytes, finalize, input_fingerprint, is_complete, load_stats
from pipeline.schema import SOURCES
from tokenizer import spm as spm_lib
from tokenizer.inputs import parse_shares, resolve_inputs, target_shares
from tokenizer.sample import SourceSelection, char_lengths, document_ranks, select

STAGE = "sample"
SAMPLE_DIR = "sample"
MODEL_NAME = "tokenizer"


def sample_name(source: str, index: int) -> str:
    return f"{SAMPLE_DIR}/{source}-{index:05d}.txt"


class RankFile(beam.DoFn):
    def __init__(self, seed: int):
        self.seed = seed

    def process(self, element):
        source, _, path = element
        table = pq.read_table(path, columns=["id", "text"])
        ids = table.column("id").combine_chunks()
        texts = table.column("text").combine_chunks()
        yield source, (document_ranks(ids, self.seed), char_lengths(texts))


class GatherRanks(beam.CombineFn):
    """Per source: the (rank, length) arrays of all its files, concatenated."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, item):
        acc.append(item)
        return acc

    def merge_accumulators(self, accs):
        return [x for acc in accs for x in acc]

    def extract_output(self, acc):
        ranks = np.concatenate([r for r, _ in acc]) if acc else np.zeros(0, np.uint64)
        lengths = np.concatenate([n for _, n in acc]) if acc else np.zeros(0, np.int64)
        return ranks, lengths


class WriteSample(beam.DoFn):
    def __init__(self, output: str, seed: int, max_sentence_bytes: int):
        self.output, self.seed, self.max_sentence_bytes = output, seed, max_sentence_bytes

    def process(self, element, selections):
        source, index, path = element
        selection: SourceSelection = selections[source]
        stats = StageStats(STAGE)
        table = pq.read_table(path, columns=["id", "text"])
        ids = table.column("id").combine_chunks()
        texts = table.column("text").combine_chunks()
        lengths = char_lengths(texts)
        copies = selection.copies_of(document_ranks(ids, self.seed))
        stats.docs_in = len(ids)
        stats.chars_in = int(lengths.sum())
        empty = lengths == 0
        stats.drop("empty", int(empty.sum()))
        chosen = (copies > 0) & ~empty
        stats.drop("not_sampled", int((~chosen & ~empty).sum()))
        stats.docs_out = int(chosen.sum())
        name = sample_name(source, index)
        sentences = too_long = 0
        with atomic_output(os.path.join(self.output, name)) as out:
            for i in np.flatnonzero(chosen):
                lines = []
                for line in spm_lib.sentences(texts[int(i)].as_py()):
                    encoded = line.encode("utf-8")
                    if len(encoded) > self.max_sentence_bytes:
                        too_long += 1  # SentencePiece would skip it anyway
                        continue
                    lines.append(encoded)
                block = b"\n".join(lines) + b"\n" if lines else b""
                out.write(block * int(copies[i]))
                sentences += len(lines) * int(copies[i])
        stats.chars_out = int((lengths * copies * chosen).sum())
        stats.lines_out = sentences
        if too_long:
            stats.notes["sentences_over_max_length"] = too_long
        yield name
        yield beam.pvalue.TaggedOutput(STATS, stats)
        yield beam.pvalue.TaggedOutput("per_source", (source, {"documents": stats.docs_out, "chars": stats.chars_out, "sentences": sentences}))


class Train(beam.DoFn):
    def __init__(self, output: str, vocab_size: int, threads: int, seed: int, extra: dict):
        self.output, self.vocab_size, self.threads, self.seed, self.extra = output, vocab_size, threads, seed, extra

    def process(self, _, files, stats, per_source, selections):
        files = sorted(files)
        inputs = [os.path.join(self.output, f) for f in files if os.path.getsize(os.path.join(self.output, f))]
        if not inputs:
            raise ValueError("the tokenizer sample is empty: no documents with text in the sources")
        spm.set_random_generator_seed(self.seed)
        prefix = os.path.join(self.output, f".tmp-{MODEL_NAME}")
        started = time.time()
        spm_lib.train(",".join(inputs), prefix, self.vocab_size, self.threads)
        seconds = time.time() - started
        model = os.path.join(self.output, MODEL_NAME + ".model")
        # The trainer records the absolute input and output paths in the model; record them relative
        # to OUTPUT, so that the model's bytes (and checksum) depend on the sample only.
        proto = spm_lib.model_proto(prefix + ".model")
        del proto.trainer_spec.input[:]
        proto.trainer_spec.input.extend(sorted(os.path.relpath(f, self.output) for f in inputs))
        proto.trainer_spec.model_prefix = MODEL_NAME
        atomic_write_bytes(model, proto.SerializeToString(deterministic=True))
        os.remove(prefix + ".model")
        os.replace(prefix + ".vocab", os.path.join(self.output, MODEL_NAME + ".vocab"))
        sample = {}
        for source, item in per_source:
            entry = sample.setdefault(source, {"documents": 0, "chars": 0, "sentences": 0})
            for k, v in item.items():
                entry[k] += v
        total_chars = sum(v["chars"] for v in sample.values())
        for source, entry in sample.items():
            sel = selections[source]
            entry.update(share=entry["chars"] / total_chars if total_chars else 0.0, budget=sel.budget,
                         available_chars=sel.available_chars, epochs=entry["chars"] / sel.available_chars if sel.available_chars else 0.0)
        card = {
            "model": MODEL_NAME + ".model",
            "sha256": spm_lib.file_sha256(model),
            "vocab_size": self.vocab_size,
            "trainer_spec": {k: v for k, v in spm_lib.trainer_kwargs(self.vocab_size, self.threads).items() if k != "num_threads"},
            "sample": {s: sample[s] for s in SOURCES if s in sample},
            "sample_files": files,
            "train_seconds": round(seconds, 3),
            **self.extra,
        }
        atomic_write_bytes(os.path.join(self.output, "tokenizer.json"), (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode())
        job = JobStats.from_merged("train-tokenizer", [STAGE], stats, **self.extra)
        job.extra.update(sha256=card["sha256"], sample=card["sample"], train_seconds=card["train_seconds"])
        finalize(self.output, job, files + [MODEL_NAME + ".model", MODEL_NAME + ".vocab", "tokenizer.json"], [])
        yield card


def build(p, inputs: dict[str, list[str]], output: str, budgets: dict[str, int], vocab_size: int, threads: int, seed: int,
          max_sentence_bytes: int, extra: dict):
    elements = [(source, i, path) for source, paths in inputs.items() for i, path in enumerate(paths)]
    files = p | "Files" >> beam.Create(elements)
    selections = (
        files
        | "SpreadRank" >> beam.Reshuffle()
        | "RankFile" >> beam.ParDo(RankFile(seed))
        | "Gather" >> beam.CombinePerKey(GatherRanks())
        | "Select" >> beam.MapTuple(lambda source, rl: (source, select(rl[0], rl[1], budgets[source])))
    )
    written = (
        files
        | "SpreadWrite" >> beam.Reshuffle()
        | "WriteSample" >> beam.ParDo(WriteSample(output, seed, max_sentence_bytes), beam.pvalue.AsDict(selections)).with_outputs(STATS, "per_source", main="files")
    )
    stats = written[STATS] | "MergeStats" >> beam.CombineGlobally(MergeStats())
    return (
        p
        | "Start" >> beam.Create([None])
        | "Train"
        >> beam.ParDo(
            Train(output, vocab_size, threads, seed, extra),
            beam.pvalue.AsList(written.files),
            beam.pvalue.AsSingleton(stats),
            beam.pvalue.AsList(written["per_source"]),
            beam.pvalue.AsDict(selections),
        )
    )


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
    started = time.time()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        build(p, inputs, args.output, budgets, args.vocab_size, args.threads, args.seed, max_sentence_bytes,
              {"fingerprint": fingerprint, "config": settings})
    stats = load_stats(args.output)
    print(f"train-tokenizer: vocab {args.vocab_size}, sample of {stats['kept']} documents -> {args.output}/{MODEL_NAME}.model "
          f"({time.time() - started:.1f} s, training {stats['train_seconds']:.1f} s)")
    for name, s in stats["sample"].items():
        print(f"  {name:<14} {s['documents']:>8} documents {s['chars']:>12} chars ({s['share']:.1%}, epochs {s['epochs']:.2f})")
    return 0
