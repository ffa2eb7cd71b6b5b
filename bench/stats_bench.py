"""Benchmark `corpusmill stats` on document shards: MB/s per core, in-process and on Beam.

Input: the ccnet job over every WARC of the shared corpus (../shared/corpus/commoncrawl, all
languages, all buckets kept), its rows concatenated and repeated into `--shards` shards of
`--repeat` copies each, written like a job writes them (zstd, 8192-row groups) so that the shards have
the size and row-group structure of real ones. The statistics are the same work per byte whatever the
rows repeat.

    CORPUSMILL_MODELS=models PYTHONPATH=. python bench/stats_bench.py [--work /tmp/corpusmill-bench-stats]

Reports on-disk (compressed Parquet) MB/s and text MB/s (UTF-8 bytes of `text`) per core.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import time

import pyarrow as pa
import pyarrow.parquet as pq

SHARED = os.environ.get("CORPUSMILL_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/corpusmill-bench-stats")
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=8, help="copies of the ccnet output per shard")
    parser.add_argument("--runs", type=int, default=3, help="in-process runs (median reported)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from reporting.command import compute_report
    from beam_jobs.cli import main as cli_main
    from pipeline.runs import shard_name, write_parquet
    from reporting.shard_stats import discover, summarise_folder

    ccnet = os.path.join(args.work, "ccnet")
    if not os.path.isfile(os.path.join(ccnet, "stats.json")):
        with contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(["ccnet", "--input", os.path.join(SHARED, "commoncrawl", "*.warc.gz"), "--output", ccnet,
                           "--languages", "all", "--keep-buckets", "head,middle,tail"])  # fmt: skip
        assert rc == 0
    big = os.path.join(args.work, f"docs-{args.shards}x{args.repeat}")
    if not os.path.isdir(big):
        base = pa.concat_tables(pq.read_table(os.path.join(ccnet, n)) for n in sorted(os.listdir(ccnet)) if n.endswith(".parquet"))
        table = pa.concat_tables([base] * args.repeat)
        tmp = big + ".tmp"
        os.makedirs(tmp, exist_ok=True)
        for i in range(args.shards):
            write_parquet(table, os.path.join(tmp, shard_name(i)))
        os.replace(tmp, big)

    _, targets = discover(big)
    disk = targets[0].shard_bytes()
    times = []
    for _ in range(args.runs):  # the machine is shared: report the median of a few runs
        t0 = time.perf_counter()
        acc = summarise_folder(targets[0])  # one core: Parquet decoding without threads
        times.append(time.perf_counter() - t0)
    local_s = sorted(times)[len(times) // 2]
    text = sum(g.bytes for g in acc.sources.values())
    docs = sum(g.docs for g in acc.sources.values())

    beam_args = [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
    t0 = time.perf_counter()
    report = compute_report(big, use_beam=True, beam_args=beam_args)
    beam_s = time.perf_counter() - t0
    assert report["total"]["docs"] == docs and report["total"]["bytes"] == text

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; input: {big}")
    print(f"  {args.shards} shards, {docs:,} documents, {disk / 1e6:,.1f} MB Parquet on disk, {text / 1e6:,.1f} MB of text")
    print(f"  in-process, 1 core : {local_s:6.2f} s  {disk / 1e6 / local_s:7.1f} MB/s on disk  {text / 1e6 / local_s:7.1f} MB/s text  (per core; median of {args.runs}: {', '.join(f'{t:.2f}' for t in times)} s)")
    print(f"  Beam, {args.workers} workers   : {beam_s:6.2f} s  {disk / 1e6 / beam_s / args.workers:7.1f} MB/s on disk  {text / 1e6 / beam_s / args.workers:7.1f} MB/s text  (per core, incl. pipeline start)")


if __name__ == "__main__":
    main()
