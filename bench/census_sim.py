"""Simulation of the line census and the join at scale, on SYNTHETIC 64-bit hashes (not a test).

The same code the web job runs (pipeline/dedup.py, pipeline/pairs.py) on random line hashes: F input
files of L/F lines each, a share of them repeated across files (`--dup-share`, drawn from a pool, so
a repeated line lands in several files), written as each file's sorted pairs; then the census of each
hash range (as many ranges as `--range-mb` needs) and each file's join against the range drop lists.
Reports throughput, bytes written to the work folder per line (what a distributed runner moves between
the phases: the shuffle), and peak memory of one census task and of one join task.
Usage: python bench/census_sim.py --lines 10000000 [--files 64] [--range-mb 512] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pipeline.dedup import census_range, file_drops, range_count, write_file_hashes  # noqa: E402
from pipeline.plan import Work  # noqa: E402
from pipeline.schema import ORD_FILE_SHIFT  # noqa: E402

LINES_PER_DOC = 100


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, required=True)
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--dup-share", type=float, default=0.3, help="share of lines drawn from a pool of repeated lines")
    parser.add_argument("--range-mb", type=int, default=512)
    parser.add_argument("--policy", default="remove_all")
    parser.add_argument("--work", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    root = args.work or tempfile.mkdtemp(prefix="census-sim-")
    work = Work(root)
    rng = np.random.default_rng(0)
    per_file = args.lines // args.files
    pool = rng.integers(0, 2**64 - 1, size=max(1, int(args.lines * args.dup_share) // 4), dtype=np.uint64, endpoint=True)
    t0 = time.perf_counter()
    for f in range(args.files):
        hashes = rng.integers(0, 2**64 - 1, size=per_file, dtype=np.uint64, endpoint=True)
        repeated = rng.random(per_file) < args.dup_share
        hashes[repeated] = rng.choice(pool, size=int(repeated.sum()))
        orders = (np.uint64(f) << np.uint64(ORD_FILE_SHIFT)) | (np.arange(per_file, dtype=np.uint64) // LINES_PER_DOC)
        # one document holds a line once (HashLines): drop repeats within a document
        key = np.unique(np.stack([orders, hashes], axis=1), axis=0)
        write_file_hashes(work, f, key[:, 1].copy(), key[:, 0].copy())
    t_write = time.perf_counter() - t0
    lines = args.files * per_file
    hashes_bytes = folder_bytes(work.path("census", "hashes"))

    ranges = range_count(lines, args.range_mb << 20)
    rss_before = peak_rss()
    t0 = time.perf_counter()
    range_bytes, dropped = 0, 0
    for r in range(ranges):
        out = census_range(work, r, ranges, args.files, args.policy)
        range_bytes = max(range_bytes, out["bytes"])
        dropped += out["dropped_lines"]
    t_census = time.perf_counter() - t0
    rss_census = peak_rss()
    drops_bytes = folder_bytes(work.path("census", "drops"))

    t0 = time.perf_counter()
    join_max = 0
    for f in range(args.files):
        o, h = file_drops(work, f, ranges)
        join_max = max(join_max, o.nbytes + h.nbytes)
    t_join = time.perf_counter() - t0

    result = {
        "synthetic": True, "lines": lines, "files": args.files, "dup_share": args.dup_share, "ranges": ranges,
        "dropped_lines": dropped,
        "write_lines_per_s": lines / t_write, "census_lines_per_s": lines / t_census, "join_lines_per_s": lines / t_join,
        "bytes_per_line_hashes": hashes_bytes / lines, "bytes_per_line_drops": drops_bytes / lines,
        "census_task_range_bytes_max": range_bytes, "join_task_drop_bytes_max": join_max,
        "process_peak_rss_before_census": rss_before, "process_peak_rss_after_census": rss_census,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if not args.work:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
