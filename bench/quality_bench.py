"""Quality classifier benchmark (not a test), on the shared corpus: the cited URLs of its Wikipedia
dumps and how many of its web pages they reach; then one classifier per positives mode, each with its
held-out ROC AUC and the share of the corpus's English web pages it keeps at P(wiki) >= 0.25; and
how often cc_net's whole-document perplexity puts a C4 document in another bucket than per-line
scoring did (corpusmill before).

  web pages:  all ../shared/corpus/commoncrawl/*.warc.gz through `corpusmill ccnet --no-quality`
              (all buckets kept; training uses head and middle, as RedPajama), with an LM trained here
              by `corpusmill train-lm` on ../shared/corpus/wikipedia/summaries-en.jsonl.gz
  cited URLs: `corpusmill wiki-refs` on the shared XML dumps (RedPajama's rule, and with --template-urls)
  modes:      cited-url   pages whose URL is cited (the reference; none here)
              cited-domain pages whose domain is cited (the proxy)
              wikipedia   Wikipedia text (summaries-en + the articles of the XML dumps) as positives
Usage: python bench/quality_bench.py [--json OUT] [--workdir DIR]
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from classifiers.quality_model import QualityModel  # noqa: E402
from pipeline.models import load_kenlm, load_sentencepiece  # noqa: E402
from pipeline.perplexity import bucket_of, compute_cutoffs, document_perplexity, lm_paths  # noqa: E402
from pipeline.text import normalize_for_lm  # noqa: E402
from pipeline.wiki_refs import domain_key, url_key  # noqa: E402

REPO = os.path.join(os.path.dirname(__file__), "..")
SHARED = os.environ.get("CORPUSMILL_SHARED", os.path.join(REPO, "..", "shared", "corpus"))  # main: ../shared/corpus
BEAM = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
THRESHOLD = 0.25


def corpusmill(*args, module=None):
    cmd = [sys.executable, "-m", "beam_jobs.cli", *args]
    if module:  # a command module the CLI table does not list yet
        cmd = [sys.executable, "-c", f"import sys, argparse, {module} as m; p = argparse.ArgumentParser(); m.add_arguments(p); "
               f"a, rest = p.parse_known_args(sys.argv[1:]); sys.exit(m.run(a, rest))", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {proc.stderr[-3000:]}")
    return proc.stdout


def per_line_perplexity(sp, lm, text):
    """corpusmill's earlier rule: each line normalised and scored on its own."""
    pieces = [" ".join(sp.encode_as_pieces(normalize_for_lm(line))) for line in text.split("\n")]
    return round(10.0 ** (-sum(lm.score(p) for p in pieces) / sum(len(p.split()) + 1 for p in pieces)), 1)


def perplexity_fidelity(lm_dir):
    sp, lm = load_sentencepiece(lm_paths(lm_dir, "en")[0]), load_kenlm(lm_paths(lm_dir, "en")[1])
    with gzip.open(os.path.join(SHARED, "c4", "c4-00000.json.gz"), "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    doc = np.array([document_perplexity(sp, lm, t) for t in texts])
    line = np.array([per_line_perplexity(sp, lm, t) for t in texts])
    cut_doc, cut_line = compute_cutoffs({"en": doc})["en"], compute_cutoffs({"en": line})["en"]
    b_doc = [bucket_of(p, cut_doc) for p in doc]
    b_line = [bucket_of(p, cut_line) for p in line]
    return {"documents": len(texts), "cutoffs_whole_document": cut_doc, "cutoffs_per_line": cut_line,
            "bucket_differs": int(sum(a != b for a, b in zip(b_doc, b_line))),
            "bucket_differs_share": float(np.mean([a != b for a, b in zip(b_doc, b_line)]))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="quality-bench-"))
    warcs = sorted(glob.glob(os.path.join(SHARED, "commoncrawl", "*.warc.gz")))
    dumps = sorted(glob.glob(os.path.join(SHARED, "wikipedia", "*.xml.bz2")))
    summaries = os.path.join(SHARED, "wikipedia", "summaries-en.jsonl.gz")
    report: dict = {}
    t0 = time.perf_counter()
    if not os.path.isfile(f"{work}/lm/en.arpa.bin"):
        corpusmill("train-lm", "--input", summaries, "--output", f"{work}/lm", "--vocab-size", "8000", "--force")
    report["perplexity"] = perplexity_fidelity(f"{work}/lm")
    if not os.path.isfile(f"{work}/unfiltered/stats.json"):
        corpusmill("ccnet", "--input", *warcs, "--output", f"{work}/unfiltered", "--lm-dir", f"{work}/lm", "--no-quality",
                   "--keep-buckets", "head,middle,tail", *BEAM)
    pages = [r for f in sorted(glob.glob(f"{work}/unfiltered/*.parquet"))
             for r in pq.read_table(f, columns=["url", "text", "language", "bucket"]).to_pylist()]
    english = [p for p in pages if p["language"] == "en"]
    report["pages"] = {"english": len(english), "english_head_middle": sum(p["bucket"] in ("head", "middle") for p in english)}

    for name, extra in (("refs", []), ("refs_and_templates", ["--template-urls"])):
        corpusmill("--input", *dumps, "--output", f"{work}/cited-{name}.txt", *extra, *BEAM, module="beam_jobs.wiki_refs")
        urls = open(f"{work}/cited-{name}.txt").read().split()
        ukeys, dkeys = {url_key(u) for u in urls}, {domain_key(u) for u in urls}
        report[f"cited_{name}"] = {
            "urls": len(urls), "domains": len(dkeys),
            "english_pages_cited_by_url": sum(url_key(p["url"]) in ukeys for p in english),
            "english_pages_on_a_cited_domain": sum(domain_key(p["url"]) in dkeys for p in english),
            "cited_domains_with_a_page": len({domain_key(p["url"]) for p in english} & dkeys),
        }
    if not glob.glob(f"{work}/articles/*.parquet"):
        corpusmill("source", "wikipedia", "--input", *dumps, "--output", f"{work}/articles", "--languages", "en", *BEAM)
    cited = f"{work}/cited-refs_and_templates.txt"
    modes = {
        "cited-url": ["--cited-urls", cited, "--match", "url"],
        "cited-domain": ["--cited-urls", cited, "--match", "domain"],
        "wikipedia": ["--positives", summaries, f"{work}/articles/*.parquet"],
    }
    texts = [p["text"] for p in english]
    head_middle = np.array([p["bucket"] in ("head", "middle") for p in english])
    settings = {  # RedPajama's (fastText's defaults) and corpusmill's earlier ones, for a small training set
        "fasttext-defaults": [],
        "epoch25-lr0.5-dim64-bigrams": ["--epoch", "25", "--lr", "0.5", "--dim", "64", "--word-ngrams", "2"],
    }
    report["modes"] = {}
    for mode, flags in modes.items():
        for setting, hyper in settings.items():
            name = f"{mode} / {setting}"
            out = f"{work}/model-{mode}-{setting}"
            t = time.perf_counter()
            try:
                corpusmill("train-quality", *flags, *hyper, "--pages", f"{work}/unfiltered/*.parquet", "--output", out, "--force", *BEAM)
            except RuntimeError as err:
                report["modes"][name] = {"trained": False, "why": str(err).strip().splitlines()[-1]}
                continue
            card = json.load(open(f"{out}/wiki_vs_cc.bin.json"))
            scores = QualityModel.load(f"{out}/wiki_vs_cc.bin").wiki_probability(texts)
            held = card["heldout"]
            report["modes"][name] = {
                "trained": True, "train_seconds": round(time.perf_counter() - t, 1),
                "counts": {k: card["data"]["counts"][k] for k in ("positives_unique", "negatives_unique", "per_class", "train", "heldout")},
                "heldout": {k: held[k] for k in ("examples", "positives", "negatives", "roc_auc", "precision", "recall")},
                "heldout_negatives_kept_at_0.25": held["fp"] / held["negatives"],
                "english_pages_kept_at_0.25": float(np.mean(scores >= THRESHOLD)),
                "english_head_middle_pages_kept_at_0.25": float(np.mean(scores[head_middle] >= THRESHOLD)),
                "p_wiki_on_english_pages": {q: round(float(np.quantile(scores, v)), 3) for q, v in (("min", 0), ("median", 0.5), ("max", 1))},
            }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        json.dump(report, open(args.json, "w"), indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
