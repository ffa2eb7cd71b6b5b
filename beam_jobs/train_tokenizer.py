"""`corpusmill train-tokenizer`: sample training text from the curated sources in the mix's
proportions (deterministic), then train a SentencePiece BPE model with the LLaMA trainer_spec.

Graph:
    (source, file) -> RankFile (seeded hash of each id, character length)
        -> CombinePerKey(source) -> per-source selection (copies + rank threshold), side input
    (source, file) -> WriteSample: the selected documents' training lines, each document as many
        times as selected -> OUTPUT/sample/<source>-NNNNN.txt, and a completion marker per file in the
        work folder (OUTPUT/.work/<fp>/done/sample/<source>-NNNNN.json: its figures and stats)
    -> the sample report (done/report/sample.json: every file's figures, the selections)
A rerun after a kill keeps the work done (`pipeline.job.run_job`'s work folder): a file whose marker
exists is not sampled again, and once the report exists the pipeline does not run at all.
Then, in this process once the pipeline is done, SentencePiece trains on the sample files with all
its threads (not inside a Beam worker, where it would share the cores with idle worker processes):
    -> OUTPUT/tokenizer.model, .vocab, tokenizer.json (sample, trainer_spec, timings), stats.json

Each input file is read twice (ranks, then text): a single pass has to carry the candidate text
through Beam's shuffle to one place per source, which measured slower (in one process, and more so
across worker processes) than reading the Parquet again (~0.15 s per 100 M characters).
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
from pipeline.job import run_job
from pipeline.plan import Work
from pipeline.runs import TMP_PREFIX, atomic_output, atomic_write_bytes
from pipeline.schema import SOURCES
from tokenizer import spm as spm_lib
from tokenizer.inputs import parse_shares, resolve_inputs, target_shares
from tokenizer.sample import SourceSelection, char_lengths, document_ranks, select, training_blocks

STAGE = "sample"
SAMPLE_DIR = "sample"
MODEL_NAME = "tokenizer"
MARKER = "sample"  # per sampled input file: work.load(MARKER, "<source>-NNNNN")
REPORT = ("report", "sample")  # the pipeline -> driver hand-off, in the work folder
# Below this much input (Parquet bytes), and unless Beam options say otherwise, sample in one
# process: on a 2-core machine, 32 MB of Parquet (100 M characters, a 124 MB sample) samples in
# 0.8 s in one process and 1.6 s with 2 worker processes, which take ~1 s to start.
ONE_PROCESS_INPUT_BYTES = 256 << 20


def sample_key(source: str, index: int) -> str:
    return f"{source}-{index:05d}"


def sample_name(source: str, index: int) -> str:
    return f"{SAMPLE_DIR}/{sample_key(source, index)}.txt"


class RankFile(beam.DoFn):
    def __init__(self, seed: int):
        self.seed = seed

    def process(self, element):
        source, _, path = element
        table = pq.read_table(path, columns=["id", "text"])
        yield source, (document_ranks(table.column("id").combine_chunks(), self.seed), char_lengths(table.column("text").combine_chunks()))


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


class WriteSample(beam.DoFn):
    """One input file's selected documents, in file order, each as many times as selected."""

    def __init__(self, output: str, work: Work, seed: int, max_sentence_bytes: int):
        self.output, self.work, self.seed, self.max_sentence_bytes = output, work, seed, max_sentence_bytes

    def process(self, element, selections):
        source, index, path = element
        name = sample_name(source, index)
        done = self.work.load(MARKER, sample_key(source, index))
        if done is not None and os.path.isfile(os.path.join(self.output, name)):
            yield done  # sampled before a kill: the selection is a function of the inputs and seed
            return
        selection: SourceSelection = selections[source]
        table = pq.read_table(path, columns=["id", "text"])
        texts = table.column("text").combine_chunks()
        lengths = char_lengths(texts)
        copies = selection.copies_of(document_ranks(table.column("id").combine_chunks(), self.seed))
        empty = lengths == 0
        chosen = np.flatnonzero((copies > 0) & ~empty)
        blocks, lines, too_long = training_blocks(texts.take(pa.array(chosen, pa.int64())), self.max_sentence_bytes)
        with atomic_output(os.path.join(self.output, name)) as out:
            write_blocks(out, blocks, np.repeat(np.arange(len(chosen)), copies[chosen]))
        stats = StageStats(STAGE, docs_in=len(lengths), docs_out=len(chosen), chars_in=int(lengths.sum()),
                           chars_out=int((lengths[chosen] * copies[chosen]).sum()), lines_out=int((lines * copies[chosen]).sum()))
        stats.drop("empty", int(empty.sum()))
        stats.drop("not_sampled", len(lengths) - int(empty.sum()) - len(chosen))
        if too_long.sum():
            stats.notes["sentences_over_max_length"] = int(too_long.sum())
        done = {"source": source, "file": name, "stats": stats.to_dict(), "documents": stats.docs_out, "chars": stats.chars_out,
                "sentences": stats.lines_out}
        self.work.save(MARKER, sample_key(source, index), done)  # after the sample file is in place
        yield done


class WriteReport(beam.DoFn):
    def __init__(self, work: Work):
        self.work = work

    def process(self, _, written, selections):
        report = {"files": sorted(written, key=lambda w: w["file"]),
                  "selections": {s: {"budget": sel.budget, "available_chars": sel.available_chars} for s, sel in selections.items()}}
        self.work.save(*REPORT, report)
        yield len(written)


def build(p, inputs: dict[str, list[str]], output: str, work: Work, budgets: dict[str, int], seed: int, max_sentence_bytes: int):
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
        | "WriteSample" >> beam.ParDo(WriteSample(output, work, seed, max_sentence_bytes), beam.pvalue.AsDict(selections))
    )
    return (
        p
        | "Start" >> beam.Create([None])
        | "WriteReport" >> beam.ParDo(WriteReport(work), beam.pvalue.AsList(written), beam.pvalue.AsDict(selections))
    )


def train(output: str, report: dict, vocab_size: int, threads: int, seed: int, extra: dict):
    """Trains on the sample files the pipeline wrote, in this process; writes the model and its card;
    returns (stats, files, dead letters) for the job convention (`pipeline.job.run_job`)."""
    files = [w["file"] for w in report["files"]]
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
    sample: dict[str, dict] = {}
    for w in report["files"]:
        entry = sample.setdefault(w["source"], {"documents": 0, "chars": 0, "sentences": 0})
        for k in entry:
            entry[k] += w[k]
    total_chars = sum(v["chars"] for v in sample.values())
    for source, entry in sample.items():
        sel = report["selections"][source]
        entry.update(share=entry["chars"] / total_chars if total_chars else 0.0, budget=sel["budget"], available_chars=sel["available_chars"],
                     epochs=entry["chars"] / sel["available_chars"] if sel["available_chars"] else 0.0)
    sample = {s: sample[s] for s in SOURCES if s in sample}
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
    merged = merge_stage_stats(StageStats.from_dict(w["stats"]) for w in report["files"])
    job = JobStats.from_merged("train-tokenizer", [STAGE], merged)
    job.extra.update(sha256=card["sha256"], sample=sample, sample_seconds=extra.get("sample_seconds"), train_seconds=card["train_seconds"])
    return job, files + [MODEL_NAME + ".model", MODEL_NAME + ".vocab", "tokenizer.json"], []


def remove_stale_sample(output: str, keep: set[str]) -> None:
    """Sample files this run has no marker for (other inputs' sample, which must not be trained on) and
    the temporary files of a killed run: the work folder of this run's fingerprint says what is kept."""
    folder = os.path.join(output, SAMPLE_DIR)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(TMP_PREFIX) or not (name.endswith(".txt") and name[: -len(".txt")] in keep):
            os.remove(os.path.join(folder, name))


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
    beam_args = list(beam_args)
    paths = [p for ps in inputs.values() for p in ps]
    local = not any("://" in p for p in paths)
    if local and sum(map(os.path.getsize, paths)) < ONE_PROCESS_INPUT_BYTES and not any(a.startswith(("--runner", "--direct_num_workers", "--direct_running_mode")) for a in beam_args):
        beam_args += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    started = time.perf_counter()

    def body(work):
        remove_stale_sample(args.output, set(work.done_names(MARKER)))
        report = work.load(*REPORT)
        if report is None:
            with beam.Pipeline(options=pipeline_options(beam_args)) as p:
                build(p, inputs, args.output, work, budgets, args.seed, max_sentence_bytes)
            report = work.load(*REPORT)
        sample_seconds = round(time.perf_counter() - started, 3)
        return train(args.output, report, args.vocab_size, args.threads, args.seed, {"sample_seconds": sample_seconds})

    stats = run_job("train-tokenizer", paths, args.output, settings, body, force=args.force)
    if stats is None:
        print(f"{args.output}: up to date (same inputs and config); --force retrains")
        return 0
    print(f"train-tokenizer: vocab {args.vocab_size}, sample of {stats['kept']} documents -> {args.output}/{MODEL_NAME}.model "
          f"({time.perf_counter() - started:.1f} s: sampling {stats['sample_seconds']:.1f} s, training {stats['train_seconds']:.1f} s)")
    for name, s in stats["sample"].items():
        print(f"  {name:<14} {s['documents']:>8} documents {s['chars']:>12} chars ({s['share']:.1%}, epochs {s['epochs']:.2f})")
    return 0
