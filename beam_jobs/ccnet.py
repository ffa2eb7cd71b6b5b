"""`corpusmill ccnet`: the CCNet web pipeline (its plan: `pipeline/ccnet.py`) on Apache Beam.

The plan's per-file phases run as ParDos over the input files, its barriers (line census per hash
range, perplexity cut-offs) as combines and ParDos over their work items (`beam_jobs/common.py`);
the run convention (fingerprint, resume, stats.json last) is `pipeline/job.py`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

from beam_jobs.common import beam_executor
from pipeline.ccnet import CCNetConfig
from pipeline.dedup import POLICIES
from pipeline.job import run_plan
from pipeline.runs import expand_inputs


def _config_dict(config: CCNetConfig) -> dict:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = CCNetConfig()
    parser.add_argument("--input", required=True, nargs="+", help="glob(s) of WARC/WET/ARC files, gzip or not (local or s3://, gs://...)")
    parser.add_argument("--output", required=True, help="output folder for part-NNNNN.parquet, stats.json, dead_letter.jsonl")
    parser.add_argument("--extractor", default=d.extractor, choices=["resiliparse", "trafilatura"])
    parser.add_argument("--dedup", default=d.dedup_policy, choices=POLICIES, help="line dedup policy (default: %(default)s, as CCNet)")
    parser.add_argument("--exact-dedup", action="store_true",
                        help="keep one copy of each page (same extracted text) before the line dedup, as RedPajama v1 (default: off, as cc_net)")
    parser.add_argument("--dedup-group-files", type=int, default=d.dedup_group_files,
                        help="0: dedup across all inputs (default); N: within groups of N consecutive input files (cc_net's hash_in_mem)")
    parser.add_argument("--census-range-mb", type=int, default=d.census_range_mb,
                        help="memory budget of one hash range of the line census; the range count grows with the input (default: %(default)s)")
    parser.add_argument("--min-length", type=int, default=d.min_length, help="drop documents shorter than this after extraction (default: %(default)s, cc_net)")
    parser.add_argument("--languages", default=",".join(d.languages), help="languages to keep, comma-separated, or 'all' (default: %(default)s)")
    parser.add_argument("--lid-threshold", type=float, default=d.lid_threshold)
    parser.add_argument("--lid-model", default=d.lid_model, help="fastText lid.176 (default: %(default)s)")
    parser.add_argument("--lm-dir", default=d.lm_dir, help="folder of <lang>.sp.model + <lang>.arpa.bin (default: %(default)s)")
    parser.add_argument("--cutoffs", default=None, help="perplexity cut-off file (default: <lm-dir>/cutoffs.json if present, else computed from this run)")
    parser.add_argument("--keep-buckets", default=",".join(d.keep_buckets), help="perplexity buckets to keep (default: %(default)s)")
    parser.add_argument("--quality-model", default=d.quality_model, help="Wikipedia-vs-web classifier (default: %(default)s; none: no quality filter)")
    parser.add_argument("--no-quality", action="store_true", help="do not score or filter by quality (e.g. to make the classifier's negatives)")
    parser.add_argument("--quality-threshold", type=float, default=d.quality_threshold, help="keep P(wiki) >= this (default: %(default)s, RedPajama v1)")
    parser.add_argument("--batch-records", type=int, default=d.batch_records, help="records per batch")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def config_from_args(args) -> CCNetConfig:
    languages = None if args.languages == "all" else tuple(x for x in args.languages.split(",") if x)
    return CCNetConfig(
        extractor=args.extractor,
        dedup_policy=args.dedup,
        exact_dedup=args.exact_dedup,
        dedup_group_files=args.dedup_group_files,
        census_range_mb=args.census_range_mb,
        min_length=args.min_length,
        languages=languages,
        lid_threshold=args.lid_threshold,
        lid_model=args.lid_model,
        lm_dir=args.lm_dir,
        cutoffs=args.cutoffs,
        keep_buckets=tuple(x for x in args.keep_buckets.split(",") if x),
        quality_model=None if args.no_quality else args.quality_model,
        quality_threshold=args.quality_threshold,
        batch_records=args.batch_records,
    )


def run(args, beam_args: list[str]) -> int:
    config = config_from_args(args)
    paths = expand_inputs(args.input)
    config.check_models()
    fixed = config.fixed_cutoffs()
    started = time.time()
    stats = run_plan(config.plan(args.output), paths, args.output, _config_dict(config), force=args.force,
                     executor=beam_executor(beam_args), extra={"cutoffs": fixed} if fixed is not None else None)
    if stats is None:
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        return 0
    print(summary(stats, args.output, time.time() - started))
    return 0


def summary(stats: dict, output: str, seconds: float | None = None) -> str:
    lines = [f"ccnet: {stats['read']} documents read, {stats['kept']} kept -> {output}" + (f" ({seconds:.1f} s)" if seconds else "")]
    for reason, n in stats["dropped"].items():
        lines.append(f"  dropped {reason:<22} {n}")
    if stats.get("cutoffs"):
        lines.append("  perplexity cut-offs (30th/60th percentile): " + json.dumps(stats["cutoffs"]))
    return "\n".join(lines)
