"""Quality classifier benchmark (not a test): held-out ROC AUC on Wikipedia text vs web pages of the
shared corpus, training time, scoring documents/s per core, and examples of kept and dropped pages.

  positives: ../shared/corpus/wikipedia/summaries-en.jsonl.gz (8,033 English lead sections) and, with
             --with-articles, the full English articles of the shared XML dumps (`corpusmill source wikipedia`)
  negatives: English pages of all ../shared/corpus/commoncrawl/*.warc.gz after CCNet processing
             without the quality filter (all perplexity buckets)
Usage: python bench/quality_bench.py [--json OUT]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import pyarrow.parquet as pq  # noqa: E402

import numpy as np  # noqa: E402

from classifiers.quality import POSITIVE, QualityModel, build_training_set  # noqa: E402

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")


def corpusmill(*args):
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, capture_output=True,
                   cwd=os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--with-articles", action="store_true", help="add full Wikipedia articles to the positives")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="quality-bench-")
    warcs = sorted(glob.glob(os.path.join(SHARED, "commoncrawl", "*.warc.gz")))
    wiki = os.path.join(SHARED, "wikipedia", "summaries-en.jsonl.gz")
    corpusmill("ccnet", "--input", *warcs, "--output", f"{work}/unfiltered", "--no-quality", "--keep-buckets", "head,middle,tail")
    positives = [wiki]
    if args.with_articles:
        dumps = sorted(glob.glob(os.path.join(SHARED, "wikipedia", "*.xml.bz2")))
        corpusmill("source", "wikipedia", "--input", *dumps, "--output", f"{work}/articles", "--languages", "en")
        positives.append(f"{work}/articles/*.parquet")
    t = time.perf_counter()
    corpusmill("train-quality", "--positives", *positives, "--negatives", f"{work}/unfiltered/*.parquet", "--output", f"{work}/model",
               "--force", "--direct_num_workers=1", "--direct_running_mode=in_memory")
    train_seconds = time.perf_counter() - t
    card = json.load(open(f"{work}/model/wiki_vs_cc.bin.json"))
    model = QualityModel.load(f"{work}/model/wiki_vs_cc.bin")
    docs = [r for f in sorted(glob.glob(f"{work}/unfiltered/*.parquet")) for r in pq.read_table(f, columns=["url", "text"]).to_pylist()]
    texts = [d["text"] for d in docs]
    t = time.perf_counter()
    model.wiki_probability(texts)
    score_seconds = time.perf_counter() - t
    # Examples from the held-out split only (the same deterministic split the job made).
    lines = lambda p: [x.rstrip("\n") for x in open(p, encoding="utf-8") if x.strip()]  # noqa: E731
    split = build_training_set(lines(f"{work}/model/examples/positives.txt"), lines(f"{work}/model/examples/negatives.txt"),
                               seed=card["hyper_parameters"]["seed"])
    held = [(label == POSITIVE, text) for label, text in split.heldout]
    held_scores = model.wiki_probability([t for _, t in held])
    ranked = sorted(zip(held_scores.tolist(), held), key=lambda x: x[0])
    example = lambda s, lab, t: {"p_wiki": round(s, 4), "label": "wiki" if lab else "web", "start": t[:160]}  # noqa: E731
    examples = {
        "held-out web pages kept (p_wiki >= 0.25)": [example(s, lab, t) for s, (lab, t) in ranked if not lab and s >= 0.25][:3],
        "held-out web pages dropped, highest scores": [example(s, lab, t) for s, (lab, t) in ranked if not lab and s < 0.25][-3:],
        "held-out wikipedia dropped": [example(s, lab, t) for s, (lab, t) in ranked if lab and s < 0.25][:3],
        "held-out wikipedia, lowest kept": [example(s, lab, t) for s, (lab, t) in ranked if lab and s >= 0.25][:2],
    }
    report = {
        "heldout": card["heldout"], "counts": card["data"]["counts"], "hyper_parameters": card["hyper_parameters"],
        "train_seconds_end_to_end": train_seconds,
        "scoring": {"docs": len(texts), "seconds": score_seconds, "docs_per_s_per_core": len(texts) / score_seconds,
                    "mb_per_s": sum(len(x) for x in texts) / 1e6 / score_seconds},
        "heldout_web_pages_kept_at_0.25": float(np.mean([s >= 0.25 for s, (lab, _) in zip(held_scores, held) if not lab])),
        "examples": examples,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        json.dump(report, open(args.json, "w"), indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
