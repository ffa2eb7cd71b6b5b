"""`corpusmill train-quality` and `corpusmill eval-quality`: the Wikipedia-vs-web linear classifier.

train-quality is a Beam job up to the training files: positives (Wikipedia text) and negatives (web
documents, e.g. a `corpusmill ccnet --no-quality` output) are read, prepared exactly as they are
scored, and deduplicated inside Beam; the examples of each class are written sorted by their hash, so
the files do not depend on the runner. Balancing, the seeded shuffle, the held-out split and
fastText's training (one thread: deterministic) follow in this process.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import typing

import apache_beam as beam
import numpy as np

from beam_jobs.common import pipeline_options
from classifiers.metrics import summarize
from classifiers.quality import QualityHyperParameters, QualityModel, build_training_set, prepare, train
from pipeline.quality import DEFAULT_THRESHOLD
from pipeline.runs import atomic_write_bytes, expand_inputs
from pipeline.textio import iter_documents


@beam.typehints.with_output_types(typing.Tuple[typing.Tuple[str, str], str])
class ReadExamples(beam.DoFn):
    """(label, path) -> (sha1 of the prepared text, prepared text); documents in other languages are counted."""

    def __init__(self, language: str | None):
        self.language = language

    def process(self, element):
        label, path = element
        for doc in iter_documents(path):
            if self.language and doc.get("language") and doc["language"] != self.language:
                yield beam.pvalue.TaggedOutput("other_language", label)
                continue
            text = prepare(doc["text"] or "")
            if text:
                yield (label, hashlib.sha1(text.encode()).hexdigest()), text


def read_examples(positives: list[str], negatives: list[str], language: str | None, workdir: str, beam_args: list[str]) -> dict:
    """Writes `<workdir>/positives.txt` and `negatives.txt` (distinct prepared texts, sorted by hash)."""
    os.makedirs(workdir, exist_ok=True)
    items = [("positives", p) for p in positives] + [("negatives", n) for n in negatives]
    counts_path = os.path.join(workdir, "read_counts.json")

    def write(kv):
        label, texts = kv
        body = "".join(t + "\n" for _, t in sorted(texts))
        atomic_write_bytes(os.path.join(workdir, f"{label}.txt"), body.encode())
        return label, len(texts)

    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        read = (
            p | "Files" >> beam.Create(items) | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadExamples(language)).with_outputs("other_language", main="examples")
        )
        distinct = read.examples | "Dedup" >> beam.CombinePerKey(lambda texts: min(texts))
        written = (
            distinct
            | "ByLabel" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(write)
        )
        other = read.other_language | "CountOther" >> beam.combiners.Count.PerElement()
        (
            (written, other | "Tag" >> beam.Map(lambda kv: (f"{kv[0]}_other_language", kv[1])))
            | beam.Flatten()
            | beam.combiners.ToDict()
            | beam.Map(lambda d: atomic_write_bytes(counts_path, json.dumps(d, sort_keys=True).encode()))
        )
    return json.load(open(counts_path))


def _lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--positives", required=True, nargs="+", help="Wikipedia text: .jsonl[.gz], .txt, or Parquet shards (e.g. `corpusmill source wikipedia` output)")
    parser.add_argument("--negatives", required=True, nargs="+", help="web documents: Parquet shards of a `corpusmill ccnet --no-quality` run, or .jsonl/.txt")
    parser.add_argument("--output", required=True, help="folder for the model (wiki_vs_cc.bin + .json card) and its training files")
    parser.add_argument("--language", default="en", help="use only documents in this language when the input records one ('' for all)")
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--heldout", type=float, default=0.1, help="held-out fraction (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="threshold the card reports precision/recall at")
    h = QualityHyperParameters()
    parser.add_argument("--epoch", type=int, default=h.epoch)
    parser.add_argument("--lr", type=float, default=h.lr)
    parser.add_argument("--dim", type=int, default=h.dim)
    parser.add_argument("--word-ngrams", type=int, default=h.wordNgrams)
    parser.add_argument("--force", action="store_true")


def run_train(args, beam_args: list[str]) -> int:
    model_path = os.path.join(args.output, "wiki_vs_cc.bin")
    if os.path.isfile(model_path) and os.path.isfile(model_path + ".json") and not args.force:
        print(f"quality model exists: {model_path} (use --force to retrain)")
        return 0
    positives, negatives = expand_inputs(args.positives), expand_inputs(args.negatives)
    workdir = os.path.join(args.output, "examples")
    counts = read_examples(positives, negatives, args.language or None, workdir, beam_args)
    training = build_training_set(
        _lines(os.path.join(workdir, "positives.txt")), _lines(os.path.join(workdir, "negatives.txt")),
        seed=args.seed, heldout_fraction=args.heldout, max_per_class=args.max_per_class,
    )
    training.counts.update({k: v for k, v in counts.items() if "other_language" in k})
    hyper = QualityHyperParameters(epoch=args.epoch, lr=args.lr, dim=args.dim, wordNgrams=args.word_ngrams, seed=args.seed)
    sources = {"positives": positives, "negatives": negatives, "language": args.language or "all"}
    card = train(training, model_path, hyper, args.threshold, sources)
    print(f"quality classifier -> {model_path}")
    print(_metrics_line(card["heldout"]))
    return 0


def _metrics_line(m: dict | None) -> str:
    if not m:
        return "  (too few examples for a held-out evaluation)"
    return (f"  held-out: {m['examples']} examples, ROC AUC {m['roc_auc']:.4f}, accuracy {m['accuracy']:.4f}, "
            f"precision {m['precision']:.4f} / recall {m['recall']:.4f} at P(wiki) >= {m['threshold']}")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True)
    parser.add_argument("--positives", required=True, nargs="+")
    parser.add_argument("--negatives", required=True, nargs="+")
    parser.add_argument("--language", default="en")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def run_eval(args, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"unrecognized arguments: {' '.join(beam_args)}")
    model = QualityModel.load(args.model)
    texts, labels = [], []
    for label, globs in ((True, args.positives), (False, args.negatives)):
        for path in expand_inputs(globs):
            for doc in iter_documents(path):
                if args.language and doc.get("language") and doc["language"] != args.language:
                    continue
                if (doc["text"] or "").strip():
                    texts.append(doc["text"])
                    labels.append(label)
    if not any(labels) or all(labels):
        raise ValueError("eval-quality needs both positives and negatives")
    metrics = summarize(np.array(labels), model.wiki_probability(texts), args.threshold)
    print(json.dumps(metrics, indent=2) if args.json else _metrics_line(metrics))
    return 0
