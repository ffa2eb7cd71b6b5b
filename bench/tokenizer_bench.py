"""Benchmarks of `corpusmill train-tokenizer` and `corpusmill tokenize` against bare SentencePiece.

    PYTHONPATH=. .venv/bin/python bench/tokenizer_bench.py [--corpus /work/shared/corpus] [--workers 2]
        [--sample-chars 120000000] [--train-runs 3] [--train-only] [--train-beam "BEAM OPTIONS"]

1. Document shards (the real schema) from the shared corpus's text sources: C4, GitHub, Wikipedia
   summaries (en/es/fr), Gutenberg books, arXiv (RedPajama form), StackExchange posts; each source
   as `--files` shards, `--repeat` copies of the text (to make the run long enough to measure).
2. Training: wall time of the whole `corpusmill train-tokenizer` process (start-up, Beam sampling,
   training, writing), with its split, against bare SentencePiece training: a fresh process that only
   calls `SentencePieceTrainer.train` (the library behind `spm_train`) with the same trainer_spec and
   threads on the same sample files the job wrote. Goal: <= 1.1x. Job and bare alternate
   `--train-runs` times (a shared machine's load drifts); medians are reported.
3. Encoding: tokens/s per core of the whole `corpusmill tokenize` job (Beam, N workers, reading
   Parquet, writing .bin/.idx) against bare `sp.encode(texts, num_threads=N)` of the same documents
   already in memory, in the same run. Goal: >= 90 %.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline.accounting import JobStats, StageStats  # noqa: E402
from pipeline.runs import write_parquet  # noqa: E402
from pipeline.schema import document_id, to_document_table  # noqa: E402
from tokenizer import spm as spm_lib  # noqa: E402


def corpus_documents(corpus: str) -> dict[str, list[tuple[str, str]]]:
    docs: dict[str, list[tuple[str, str]]] = {}
    with gzip.open(os.path.join(corpus, "c4/c4-00000.json.gz"), "rt", encoding="utf-8") as f:
        docs["c4"] = [(r["url"], r["text"]) for r in map(json.loads, f)]
    with gzip.open(os.path.join(corpus, "github/github-00000.jsonl.gz"), "rt", encoding="utf-8") as f:
        docs["github"] = [(f"{r['repo_name']}/{r['path']}", r["content"]) for r in map(json.loads, f)]
    docs["wikipedia"] = []
    for lang in ("en", "es", "fr"):
        with gzip.open(os.path.join(corpus, f"wikipedia/summaries-{lang}.jsonl.gz"), "rt", encoding="utf-8") as f:
            docs["wikipedia"] += [(f"{lang}:{r['title']}", r["text"]) for r in map(json.loads, f)]
    docs["books"] = []
    for path in sorted(glob.glob(os.path.join(corpus, "books/gutenberg/*.txt"))):
        raw = open(path, "rb").read()
        docs["books"].append((os.path.basename(path), raw.decode("utf-8-sig") if path.endswith("-0.txt") else raw.decode("latin-1")))
    with open(os.path.join(corpus, "arxiv/arxiv.jsonl"), encoding="utf-8") as f:
        docs["arxiv"] = [(r["meta"]["arxiv_id"], r["text"]) for r in map(json.loads, f)]
    docs["stackexchange"] = []
    for path in sorted(glob.glob(os.path.join(corpus, "stackexchange/*/Posts.xml"))):
        site = os.path.basename(os.path.dirname(path))
        for row in ET.parse(path).getroot().iter("row"):
            docs["stackexchange"].append((f"{site}/{row.get('Id')}", (row.get("Title") or "") + "\n" + (row.get("Body") or "")))
    return docs


def write_run(root: str, docs: dict, files: int, repeat: int) -> None:
    for source, items in docs.items():
        rows = [{"id": document_id(source, f"{native}#{copy}"), "source": source, "text": text}
                for copy in range(repeat) for native, text in items]
        folder = os.path.join(root, source)
        os.makedirs(folder, exist_ok=True)
        size = -(-len(rows) // files)
        for i in range(files):
            write_parquet(to_document_table(pa.Table.from_pylist(rows[i * size : (i + 1) * size])), os.path.join(folder, f"part-{i:05d}.parquet"))
        open(os.path.join(folder, "stats.json"), "w").write(JobStats(source, [StageStats("read", len(rows), len(rows))]).to_json())


def cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "beam_jobs.cli", *args], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")})
    return time.perf_counter() - started


def bare_train(sample: list[str], prefix: str, vocab_size: int, threads: int) -> float:
    code = ("import sys; from tokenizer import spm; "
            f"spm.train({','.join(sample)!r}, {prefix!r}, {vocab_size}, {threads})")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")})
    return time.perf_counter() - started


def spm_train_binary(binary: str, sample: list[str], prefix: str, vocab_size: int, threads: int) -> float:
    flags = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in spm_lib.trainer_kwargs(vocab_size, threads).items()]
    started = time.perf_counter()
    subprocess.run([binary, f"--input={','.join(sample)}", f"--model_prefix={prefix}", *flags], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="/work/shared/corpus")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--files", type=int, default=4, help="shards per source")
    ap.add_argument("--repeat", type=int, default=3, help="copies of the text (tokenize benchmark size)")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--sample-chars", type=int, default=120_000_000, help="(a 124 MB sample on the default corpus)")
    ap.add_argument("--train-beam", default="", help="Beam options for train-tokenizer, e.g. '--direct_num_workers=2 --direct_running_mode=multi_processing' (default: the job's own)")
    ap.add_argument("--train-runs", type=int, default=3, help="job/bare pairs (the median ratio is reported)")
    ap.add_argument("--spm-train", default=None, help="an spm_train binary (sentencepiece 0.2.3) to time as a second baseline")
    ap.add_argument("--train-only", action="store_true", help="skip the encoding benchmark")
    args = ap.parse_args()
    beam = [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        write_run(run, corpus_documents(args.corpus), args.files, args.repeat)
        texts = [t for path in sorted(glob.glob(os.path.join(run, "*", "part-*.parquet")))
                 for t in pq.read_table(path, columns=["text"]).column("text").to_pylist() if t.strip()]  # the job skips blank documents
        print(f"corpus: {len(texts)} documents, {sum(map(len, texts)):,} characters, {args.workers} worker(s)/thread(s)")

        tok = os.path.join(tmp, "tok")
        rows = []
        for attempt in range(args.train_runs):  # job and bare alternate: the machine's load drifts
            job_s = cli("train-tokenizer", "--input", run, "--output", tok, "--vocab-size", str(args.vocab_size), "--sample-chars",
                        str(args.sample_chars), "--renormalize", "--threads", str(args.workers), "--force", *args.train_beam.split())
            card = json.load(open(os.path.join(tok, "tokenizer.json")))
            sample = [os.path.join(tok, f) for f in card["sample_files"] if os.path.getsize(os.path.join(tok, f))]
            # Bare: a fresh process that only trains (as `spm_train` would), timed as a whole.
            bare_s = bare_train(sample, os.path.join(tmp, "bare"), args.vocab_size, args.workers)
            binary_s = spm_train_binary(args.spm_train, sample, os.path.join(tmp, "bin"), args.vocab_size, args.workers) if args.spm_train else None
            sample_mb = sum(os.path.getsize(f) for f in sample) / 1e6
            sampling_s, training_s = card["sample_seconds"], card["train_seconds"]
            rows.append((job_s / bare_s, job_s, sampling_s, training_s, bare_s, binary_s))
            print(f"train-tokenizer (vocab {args.vocab_size}, sample {sample_mb:.1f} MB): job {job_s:.1f} s (sampling {sampling_s:.1f} s, "
                  f"training {training_s:.1f} s, start-up and writing {job_s - sampling_s - training_s:.1f} s), bare SentencePiece "
                  f"{bare_s:.1f} s -> {job_s / bare_s:.2f}x (goal <= 1.1x)"
                  + (f"; spm_train binary {binary_s:.1f} s -> {job_s / binary_s:.2f}x" if binary_s else "")
                  + f"; load average {os.getloadavg()[0]:.2f}")
        median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
        job_s, bare_s = median([r[1] for r in rows]), median([r[4] for r in rows])
        sampling_s, training_s, overhead_s = median([r[2] for r in rows]), median([r[3] for r in rows]), median([r[1] - r[3] for r in rows])
        print(f"median of {len(rows)}: job {job_s:.1f} s (sampling {sampling_s:.1f} s, training {training_s:.1f} s; job minus its "
              f"training {overhead_s:.1f} s) vs bare {bare_s:.1f} s -> {job_s / bare_s:.2f}x (median of the pairs' ratios "
              f"{median([r[0] for r in rows]):.2f}x)")
        if args.train_only:
            return
        model = os.path.join(tok, "tokenizer.model")
        sp = spm_lib.load(model)
        started = time.perf_counter()
        encoded = sp.encode(texts, return_type="numpy", num_threads=args.workers)
        bare_enc_s = time.perf_counter() - started
        bare_tokens = sum(len(e) for e in encoded)
        out = os.path.join(tmp, "tokens")
        job_enc_s = cli("tokenize", "--input", run, "--tokenizer", model, "--output", out, "--threads", "1", *beam)
        manifest = json.load(open(os.path.join(out, "manifest.json")))
        job_tokens = manifest["total"]["tokens"] - 2 * manifest["total"]["documents"]  # without BOS/EOS, as bare
        assert job_tokens == bare_tokens, (job_tokens, bare_tokens)
        bare_rate = bare_tokens / bare_enc_s / args.workers
        job_rate = job_tokens / job_enc_s / args.workers
        print(f"tokenize ({bare_tokens:,} tokens): job {job_enc_s:.1f} s = {job_rate:,.0f} tokens/s/core, bare sp.encode "
              f"{bare_enc_s:.1f} s = {bare_rate:,.0f} tokens/s/core -> {job_rate / bare_rate:.0%} (goal >= 90 %)")


if __name__ == "__main__":
    main()
