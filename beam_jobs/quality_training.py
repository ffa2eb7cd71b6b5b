"""`corpusmill train-quality` and `corpusmill eval-quality`: the linear quality classifier.

train-quality's positives are, as in LLaMA and RedPajama v1, the web pages Wikipedia cites: the pages
of a ccnet run (`--pages`, a `corpusmill ccnet --no-quality` output) whose URL is in `--cited-urls`
(a `corpusmill wiki-refs` list), taken from the head and middle buckets and of at least 1,000
characters (create_corpus.py:13,26); `--match domain` counts a page as cited when its domain is
(a proxy, for a crawl that was not made from the list). The negatives are the other pages of the run,
head and middle (create_corpus.py:31-33), sampled down at random to as many as the positives. With
`--positives` instead, Wikipedia's own text is the positive class (corpusmill's earlier classifier).

The Beam job reads the examples, prepares them exactly as they are scored, and deduplicates them;
each class is written sorted by hash, so the files do not depend on the runner. Balancing, the seeded
shuffle, the held-out split and fastText's training (one thread: deterministic) follow in this process.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import typing

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from beam_jobs.common import pipeline_options
from classifiers.metrics import summarize
from classifiers.quality_model import MIN_POSITIVE_CHARS, QualityHyperParameters, QualityModel, build_training_set, prepare, train
from pipeline.quality_filter import DEFAULT_THRESHOLD
from pipeline.accounting import JobStats, StageStats
from pipeline.job import run_job
from pipeline.plan import Work
from pipeline.runs import TMP_PREFIX, InputError, atomic_output, atomic_write_bytes, expand_inputs
from pipeline.textio import iter_documents
from pipeline.wiki_refs import domain_key, load_cited, url_key

KEPT_BUCKETS = ("head", "middle")  # RedPajama read only cc_net's head and middle files
PAGE_COLUMNS = ("url", "text", "language", "bucket")


def iter_pages(path: str) -> typing.Iterator[dict]:
    """The web pages of a ccnet run's Parquet shard (url, text, language, bucket), one row group at a time."""
    try:
        reader = pq.ParquetFile(path)
    except Exception as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from err
    names = reader.schema_arrow.names
    if "text" not in names or "url" not in names:
        raise InputError(f"{path}: not a ccnet document shard (needs 'url' and 'text' columns)")
    columns = [c for c in PAGE_COLUMNS if c in names]
    for i in range(reader.num_row_groups):
        yield from reader.read_row_group(i, columns=columns).to_pylist()


@beam.typehints.with_output_types(typing.Tuple[typing.Tuple[str, str], str])
class ReadExamples(beam.DoFn):
    """(index, role, path) -> ((label, sha1 of the prepared text), prepared text), and the reasons pages
    are left out, counted under the "skipped" output as (reason, count).

    role "pages": a ccnet shard; a page is a positive when the cited list (`cited_path`, read once per
    worker: a real dump cites tens of millions of URLs) holds its key, else a negative; role
    "wikipedia": Wikipedia text, all positives.

    Each input file's examples go first to the work folder (`examples/NNNNNN.jsonl`, then its completion
    marker `done/examples/NNNNNN.json` with the skip counts): a rerun after a kill reads a finished
    file's examples back instead of reading and preparing its pages again.
    """

    def __init__(self, work: Work, language: str | None, cited_path: str | None = None, match: str = "url"):
        self.work, self.language, self.cited_path, self.match = work, language, cited_path, match
        self.cited: set[str] | None = None

    def setup(self):
        if self.cited_path is not None:
            self.cited = load_cited(self.cited_path, self.match)

    def process(self, element):
        index, role, path = element
        name = f"{index:06d}"
        scratch = self.work.path(EXAMPLES_MARKER, name + ".jsonl")
        done = self.work.load(EXAMPLES_MARKER, name)
        if done is None or not os.path.isfile(scratch):
            skipped: dict[str, int] = {}
            with atomic_output(scratch) as out:
                for example in self.examples(role, path, skipped):
                    out.write((json.dumps(example, ensure_ascii=False) + "\n").encode())
            done = {"skipped": skipped}
            self.work.save(EXAMPLES_MARKER, name, done)
        for reason, n in sorted(done["skipped"].items()):
            yield beam.pvalue.TaggedOutput("skipped", (reason, n))
        with open(scratch, encoding="utf-8") as f:
            for line in f:
                label, digest, prepared = json.loads(line)
                yield (label, digest), prepared

    def examples(self, role: str, path: str, skipped: dict) -> typing.Iterator[list]:
        docs = iter_pages(path) if role == "pages" else iter_documents(path)
        key = {"url": url_key, "domain": domain_key}[self.match]

        def skip(reason):
            skipped[reason] = skipped.get(reason, 0) + 1

        for doc in docs:
            text = doc.get("text") or ""
            if self.language and doc.get("language") and doc["language"] != self.language:
                skip(f"{role}_other_language")
                continue
            if role == "pages" and doc.get("bucket") is not None and doc["bucket"] not in KEPT_BUCKETS:
                skip("pages_tail_bucket")
                continue
            if role == "wikipedia":
                label = "positives"
            else:
                label = "positives" if self.cited is not None and key(doc.get("url") or "") in self.cited else "negatives"
            if label == "positives" and len(text) < MIN_POSITIVE_CHARS:
                skip(f"positives_under_{MIN_POSITIVE_CHARS}_chars")
                continue
            prepared = prepare(text)
            if prepared:
                yield [label, hashlib.sha1(prepared.encode()).hexdigest(), prepared]


EXAMPLES_MARKER = "examples"  # per input file; and READ_MARKER once the examples are written
READ_MARKER = ("read", "examples")


def read_examples(items: list[tuple[str, str]], language: str | None, cited_path: str | None, match: str,
                  workdir: str, beam_args: list[str], work: Work) -> dict:
    """Writes `<workdir>/positives.txt` and `negatives.txt` (distinct prepared texts, sorted by hash);
    returns the counts. Once done (its marker in the run's work folder), a rerun returns them at once."""
    done = work.load(*READ_MARKER)
    if done is not None:
        return done
    os.makedirs(workdir, exist_ok=True)
    counts_path = os.path.join(workdir, "read_counts.json")
    for label in ("positives", "negatives"):  # a class nothing reaches has an empty file, not last run's
        atomic_write_bytes(os.path.join(workdir, f"{label}.txt"), b"")

    def write(kv):
        label, texts = kv
        body = "".join(t + "\n" for _, t in sorted(texts))
        atomic_write_bytes(os.path.join(workdir, f"{label}.txt"), body.encode())
        return label, len(texts)

    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        read = (
            p | "Files" >> beam.Create([(i, role, path) for i, (role, path) in enumerate(items)]) | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadExamples(work, language, cited_path, match)).with_outputs("skipped", main="examples")
        )
        distinct = read.examples | "Dedup" >> beam.CombinePerKey(lambda texts: min(texts))
        written = (
            distinct
            | "ByLabel" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(write)
        )
        skipped = read.skipped | "CountSkipped" >> beam.CombinePerKey(sum)
        (
            (written, skipped | "Tag" >> beam.Map(lambda kv: (f"skipped_{kv[0]}", kv[1])))
            | beam.Flatten()
            | beam.combiners.ToDict()
            | beam.Map(lambda d: atomic_write_bytes(counts_path, json.dumps(d, sort_keys=True).encode()))
        )
    with open(counts_path) as f:
        counts = json.load(f)
    work.save(*READ_MARKER, counts)
    return counts


def remove_scratch(output: str, workdir: str) -> None:
    """What a killed run left half-written: temporary files in the examples folder, and the trainer's
    temporary folders (`.tmp-quality-*`, classifiers/quality_model.py) in OUTPUT."""
    for folder in (output, workdir):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(TMP_PREFIX):
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pages", "--negatives", dest="pages", required=True, nargs="+",
                        help="web pages: Parquet shards of a `corpusmill ccnet --no-quality` run (any buckets; head and middle are used)")
    positives = parser.add_mutually_exclusive_group(required=True)
    positives.add_argument("--cited-urls", help="positives = the pages whose URL is in this list (`corpusmill wiki-refs`), as LLaMA/RedPajama")
    positives.add_argument("--positives", nargs="+", help="positives = Wikipedia text instead: .jsonl[.gz], .txt, or Parquet shards")
    parser.add_argument("--match", choices=("url", "domain"), default="url",
                        help="with --cited-urls: a page is cited when its URL is (default), or, as a proxy, its domain")
    parser.add_argument("--output", required=True, help="folder for the model (wiki_vs_cc.bin + .json card) and its training files")
    parser.add_argument("--language", default="en", help="use only documents in this language when the input records one ('' for all)")
    parser.add_argument("--max-per-class", type=int, default=None)
    parser.add_argument("--heldout", type=float, default=0.1, help="held-out fraction (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="threshold the card reports precision/recall at")
    parser.add_argument("--epoch", type=int, default=None, help="fastText setting (default: fastText's, as RedPajama v1)")
    parser.add_argument("--lr", type=float, default=None, help="fastText setting (default: fastText's)")
    parser.add_argument("--dim", type=int, default=None, help="fastText setting (default: fastText's)")
    parser.add_argument("--word-ngrams", type=int, default=None, help="fastText setting (default: fastText's)")
    parser.add_argument("--force", action="store_true")


def run_train(args, beam_args: list[str]) -> int:
    model_path = os.path.join(args.output, "wiki_vs_cc.bin")
    pages = expand_inputs(args.pages)
    items = [("pages", p) for p in pages]
    if args.cited_urls:
        cited_keys = len(load_cited(args.cited_urls, args.match))  # reads the list here too: a bad file fails before Beam
        positives = {"cited_urls": args.cited_urls, "match": args.match, "cited_keys": cited_keys, "from": "pages"}
        inputs = pages + [args.cited_urls]
    else:
        wiki = expand_inputs(args.positives)
        items += [("wikipedia", p) for p in wiki]
        positives = {"wikipedia": wiki}
        inputs = pages + wiki
    hyper = QualityHyperParameters(epoch=args.epoch, lr=args.lr, dim=args.dim, wordNgrams=args.word_ngrams, seed=args.seed)
    settings = {"positives": positives, "language": args.language, "seed": args.seed, "heldout": args.heldout,
                "max_per_class": args.max_per_class, "threshold": args.threshold, "hyper": dataclasses.asdict(hyper)}

    def body(work):
        workdir = os.path.join(args.output, "examples")
        remove_scratch(args.output, workdir)
        counts = read_examples(items, args.language or None, args.cited_urls, args.match, workdir, beam_args, work)
        training = build_training_set(
            _lines(os.path.join(workdir, "positives.txt")), _lines(os.path.join(workdir, "negatives.txt")),
            seed=args.seed, heldout_fraction=args.heldout, max_per_class=args.max_per_class,
        )
        training.counts.update({k: v for k, v in counts.items() if k.startswith("skipped_")})
        sources = {"positives": positives, "negatives": {"pages": pages, "buckets": list(KEPT_BUCKETS)}, "language": args.language or "all"}
        card = train(training, model_path, hyper, args.threshold, sources)
        print(f"quality classifier -> {model_path}")
        print(_metrics_line(card["heldout"]))
        return examples_accounting(card["data"]["counts"], card["heldout"]), ["wiki_vs_cc.bin", "wiki_vs_cc.bin.json"], []

    if run_job("train-quality", inputs, args.output, settings, body, force=args.force) is None:
        print(f"quality model up to date: {model_path} (same inputs and settings; --force retrains)")
    return 0


def examples_accounting(counts: dict, heldout: dict | None) -> JobStats:
    """Every document read is a training or held-out example, or dropped by its reason."""
    stage = StageStats("examples")
    for reason, n in counts.items():
        if reason.startswith("skipped_"):
            stage.drop(reason[len("skipped_"):], n)
    stage.drop("duplicate", counts["positives_in"] - counts["positives_unique"] + counts["negatives_in"] - counts["negatives_unique"])
    stage.drop("in_both_classes", counts["overlap_removed"])
    stage.docs_out = counts["train"] + counts["heldout"]
    read = counts["positives_in"] + counts["negatives_in"] + sum(v for k, v in counts.items() if k.startswith("skipped_"))
    stage.docs_in = read
    # The classes are balanced by a seeded sample of `per_class` examples each: the rest is not used.
    stage.drop("class_balance", read - stage.docs_out - sum(stage.dropped.values()))
    return JobStats("train-quality", [stage], {"heldout": heldout})


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
    # Every document read is scored or skipped for a named reason; the counts go with the metrics.
    documents = {"read": 0, "scored": 0, "skipped_other_language": 0, "skipped_empty_text": 0}
    for label, globs in ((True, args.positives), (False, args.negatives)):
        for path in expand_inputs(globs):
            for doc in iter_documents(path):
                documents["read"] += 1
                if args.language and doc.get("language") and doc["language"] != args.language:
                    documents["skipped_other_language"] += 1
                elif not (doc["text"] or "").strip():
                    documents["skipped_empty_text"] += 1
                else:
                    texts.append(doc["text"])
                    labels.append(label)
    documents["scored"] = len(texts)
    if not any(labels) or all(labels):
        raise ValueError("eval-quality needs both positives and negatives")
    metrics = summarize(np.array(labels), model.wiki_probability(texts), args.threshold) | {"documents": documents}
    print(json.dumps(metrics, indent=2) if args.json else _metrics_line(metrics))
    if not args.json:
        print("  documents: " + ", ".join(f"{k} {v}" for k, v in documents.items()))
    return 0
