"""Benchmark of `corpusmill ccnet` over the shared corpus's CommonCrawl WARCs (not a test).

Measures, on this machine:
  1. each library call alone, over the same documents: warcio reading, resiliparse extraction,
     xxh3 line hashing, lid.176 predict, SentencePiece + KenLM scoring -> the library-only rate;
  2. the pipeline's steps in-process (pipeline.ccnet), per stage;
  3. the Beam job end to end with 1 and 2 DirectRunner workers (docs/s, speed-up, peak RSS);
  4. the dedup census's bytes per distinct line.
Usage: python bench/ccnet_bench.py [--input GLOB] [--json OUT]
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

import numpy as np  # noqa: E402
import xxhash  # noqa: E402

from pipeline.accounting import StageStats  # noqa: E402
from pipeline.ccnet import CCNetConfig  # noqa: E402
from pipeline.dedup import DuplicateTable, LineCensus, census_input, census_parts  # noqa: E402
from pipeline.extract import decode_payload  # noqa: E402
from pipeline.langid import predict_languages  # noqa: E402
from pipeline.models import default_lm_dir, load_fasttext, load_kenlm, load_sentencepiece  # noqa: E402
from pipeline.perplexity import compute_cutoffs, lm_paths  # noqa: E402
from pipeline.warc import iter_raw_batches  # noqa: E402

DEFAULT_INPUT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus", "commoncrawl", "*.warc.gz")


def timed(fn, *a):
    t = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t


def library_alone(paths, config):
    """Each library on its own, on the same documents the pipeline sees."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    res = {}
    raws, t = timed(lambda: [b for i, p in enumerate(paths) for _, b in iter_raw_batches(p, i, StageStats("r"), [], 64)])
    n_docs = sum(b.num_rows for b in raws)
    res["read_warcio"] = {"docs": n_docs, "seconds": t}
    payloads = [(r["payload"], r["charset"]) for b in raws for r in b.select(["payload", "charset"]).to_pylist()]
    htmls = [decode_payload(p, c) for p, c in payloads]
    texts, t = timed(lambda: [extract_plain_text(HTMLTree.parse(h), main_content=True, alt_texts=False, links=False,
                                                 form_fields=False, noscript=False) for h in htmls])
    res["extract_resiliparse"] = {"docs": len(htmls), "seconds": t}
    texts = [x for x in texts if x.strip()]
    lines = [line.encode() for x in texts for line in x.split("\n")]
    _, t = timed(lambda: [xxhash.xxh3_64_intdigest(line) for line in lines])
    res["hash_xxh3"] = {"docs": len(texts), "lines": len(lines), "seconds": t}
    lid = load_fasttext(config.lid_model)
    flat = [x.replace("\n", " ") for x in texts]
    (langs, _), t = timed(predict_languages, lid, flat)
    res["lid176_predict"] = {"docs": len(flat), "seconds": t}
    en = [x for x, lang in zip(texts, langs) if lang == "en"]
    sp, lm = load_sentencepiece(lm_paths(config.lm_dir, "en")[0]), load_kenlm(lm_paths(config.lm_dir, "en")[1])

    def score():
        for doc in en:
            for pieces in sp.encode(doc.split("\n"), out_type=str):
                lm.score(" ".join(pieces))

    _, t = timed(score)
    res["kenlm_score"] = {"docs": len(en), "seconds": t}
    for v in res.values():
        v["docs_per_s"] = v["docs"] / v["seconds"]
    # Library-only rate for the whole pipeline: per input document, the sum of each library's time,
    # weighted by the share of documents that reach it.
    per_doc = sum(v["seconds"] for v in res.values()) / n_docs
    return res, 1.0 / per_doc, n_docs


def pipeline_in_process(paths, config):
    """The pipeline's own steps, timed per stage, with the same global barriers as the Beam job."""
    times: dict[str, float] = {}
    docs_in: dict[str, int] = {}

    def apply(steps, batch):
        for step in steps:
            t = time.perf_counter()
            docs_in[step.name] = docs_in.get(step.name, 0) + batch.num_rows
            batch, _ = step(batch)
            times[step.name] = times.get(step.name, 0.0) + time.perf_counter() - t
        return batch

    t0 = time.perf_counter()
    raws, t = timed(lambda: [b for i, p in enumerate(paths) for _, b in iter_raw_batches(p, i, StageStats("r"), [], config.batch_records)])
    times["read"], docs_in["read"] = t, sum(b.num_rows for b in raws)
    hashed = [apply(config.before_census(), b) for b in raws]
    t = time.perf_counter()
    census: dict[int, LineCensus] = {}
    for b in hashed:
        for r, (h, o) in census_parts(*census_input(b), config.dedup_range_bits).items():
            census.setdefault(r, LineCensus()).add(h, o)
    for c in census.values():
        c.flush()
    distinct = sum(len(c.hashes) for c in census.values())
    census_bytes = sum(c.nbytes for c in census.values())
    table = DuplicateTable.from_ranges([(r, *c.duplicates()) for r, c in census.items()])
    times["dedup_census"] = time.perf_counter() - t
    after = config.after_census()
    after[0].table = table
    scored = [apply(after, b) for b in hashed]
    bucket = config.bucket()
    from pipeline.ccnet import perplexities_by_language

    values: dict[str, list] = {}
    for b in scored:
        for lang, v in perplexities_by_language(b).items():
            values.setdefault(lang, []).append(v)
    bucket.cutoffs = compute_cutoffs({k: np.concatenate(v) for k, v in values.items()})
    kept = [apply([bucket], b) for b in scored]
    total = time.perf_counter() - t0
    stages = {name: {"docs_in": docs_in.get(name), "seconds": s, "docs_per_s": (docs_in.get(name) or 0) / s if s else None}
              for name, s in times.items()}
    dedup = {"distinct_lines": distinct, "census_bytes": census_bytes, "bytes_per_distinct_line": census_bytes / max(distinct, 1),
             "duplicated_distinct_lines": int(len(table.hashes))}
    return stages, total, sum(b.num_rows for b in kept), dedup


def _tree_rss(root: int) -> tuple[int, int]:
    """(sum, max) resident set size in bytes over a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    values = [rss.get(p, 0) for p in tree]
    return sum(values), max(values)


def beam_run(paths, config, workers):
    out = tempfile.mkdtemp(prefix=f"ccnet-bench-{workers}w-")
    cmd = [sys.executable, "-m", "pipeline.cli", "ccnet", "--input", *paths, "--output", out, "--lm-dir", config.lm_dir,
           f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing", "--force"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.path.join(os.path.dirname(__file__), ".."))
    peak_sum = peak_max = 0
    while proc.poll() is None:
        total, largest = _tree_rss(proc.pid)
        peak_sum, peak_max = max(peak_sum, total), max(peak_max, largest)
        time.sleep(0.05)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"ccnet failed ({proc.returncode}): {' '.join(cmd)}")
    stats = json.load(open(os.path.join(out, "stats.json")))
    return {"workers": workers, "seconds": seconds, "docs_read": stats["read"], "kept": stats["kept"],
            "docs_per_s": stats["read"] / seconds, "peak_rss_mb_all_processes": peak_sum / 2**20,
            "peak_rss_mb_largest_process": peak_max / 2**20, "output": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", default=DEFAULT_INPUT)
    ap.add_argument("--lm-dir", default=os.fspath(default_lm_dir()))
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    paths = sorted(glob.glob(args.input))
    config = CCNetConfig(lm_dir=args.lm_dir)
    config.check_models()
    size = sum(os.path.getsize(p) for p in paths)
    print(f"input: {len(paths)} files, {size / 1e6:.1f} MB; machine: {os.cpu_count()} cores")
    libs, lib_rate, n_docs = library_alone(paths, config)
    stages, total, kept, dedup = pipeline_in_process(paths, config)
    # Best of `--repeat` runs each: the machine may be shared.
    beam1 = min((beam_run(paths, config, 1) for _ in range(args.repeat)), key=lambda r: r["seconds"])
    beam2 = min((beam_run(paths, config, 2) for _ in range(args.repeat)), key=lambda r: r["seconds"])
    report = {
        "input_files": len(paths), "input_mb": size / 1e6, "documents": n_docs,
        "library_alone": libs, "library_only_docs_per_s": lib_rate,
        "pipeline_in_process": {"stages": stages, "seconds": total, "docs_per_s": n_docs / total, "kept": kept},
        "dedup": dedup,
        "beam_1_worker": beam1, "beam_2_workers": beam2,
        "speedup_1_to_2": beam1["seconds"] / beam2["seconds"],
        "end_to_end_vs_library_only": (n_docs / beam1["seconds"]) / lib_rate,
        "in_process_vs_library_only": (n_docs / total) / lib_rate,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
