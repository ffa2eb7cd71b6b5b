"""`corpusmill ccnet`: the CCNet web pipeline on Apache Beam (steps: `pipeline/ccnet.py`).

Graph:
    files -> ReadArchive -> Reshuffle -> [extract, dedup_in_document]
          -> census parts keyed by hash range -> CombinePerKey(LineCensus) -> duplicate table (side input)
          -> [dedup, language, perplexity_score] -> per-language cut-offs (global combine, side input)
          -> [perplexity buckets, quality] -> GroupByKey(input file) -> part-NNNNN.parquet
    + stats (merged StageStats) + dead letters -> Finalize (stats.json last)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import apache_beam as beam
import numpy as np

from beam_jobs.common import DEAD, STATS, close_run, line_census, pipeline_options, run_steps, set_duplicate_table, write_shards
from pipeline.accounting import StageStats
from pipeline.ccnet import STAGES, CCNetConfig, perplexities_by_language
from pipeline.dedup import POLICIES
from pipeline.perplexity import compute_cutoffs
from pipeline.runs import expand_inputs, input_fingerprint, is_complete, load_stats
from pipeline.warc import iter_raw_batches


class ReadArchive(beam.DoFn):
    def __init__(self, batch_records: int, parts: int):
        self.batch_records, self.parts = batch_records, parts

    def process(self, element):
        file_index, path, part = element
        stats, dead = StageStats("read"), []
        for batch_no, batch in iter_raw_batches(path, file_index, stats, dead, self.batch_records, part, self.parts):
            yield (file_index, batch_no), batch
        yield beam.pvalue.TaggedOutput(STATS, stats)
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)


class CollectPerplexities(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, item):
        for lang, values in item.items():
            acc.setdefault(lang, []).append(values)
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for acc in accs:
            for lang, values in acc.items():
                out.setdefault(lang, []).extend(values)
        return out

    def extract_output(self, acc):
        return compute_cutoffs({lang: np.concatenate(v) for lang, v in acc.items()})


def _set_cutoffs(steps, cutoffs):
    steps[0].cutoffs = cutoffs


def build(p, paths: list[str], output: str, config: CCNetConfig, fingerprint: str):
    # Work items are (file, part): each part reads its file and takes every n-th record, so extraction
    # runs where the bytes are read and only extracted text crosses the shuffle.
    items = [(i, path, part) for i, path in enumerate(paths) for part in range(config.read_parts)]
    read = (
        p
        | "Files" >> beam.Create(items)
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadArchive" >> beam.ParDo(ReadArchive(config.batch_records, config.read_parts)).with_outputs(STATS, DEAD, main="batches")
    )
    hashed, stats_hashed = run_steps(read.batches, "ExtractAndHash", config.before_census())

    census = line_census(hashed, config.dedup_range_bits)
    scored, stats_scored = run_steps(
        hashed, "DedupLangidPerplexity", config.after_census(), beam.pvalue.AsList(census), configure=set_duplicate_table
    )
    fixed = config.fixed_cutoffs()
    if fixed is not None:
        cutoffs = p | "FixedCutoffs" >> beam.Create([fixed])
    else:
        cutoffs = (
            scored
            | "Perplexities" >> beam.Map(lambda kb: perplexities_by_language(kb[1]))
            | "Cutoffs" >> beam.CombineGlobally(CollectPerplexities())
        )
    kept, stats_kept = run_steps(
        scored, "BucketsAndQuality", config.after_buckets(), beam.pvalue.AsSingleton(cutoffs), configure=_set_cutoffs
    )
    files = write_shards(kept, output)
    extra = {"fingerprint": fingerprint, "config": _config_dict(config)}
    cutoff_extra = cutoffs | "CutoffsExtra" >> beam.Map(lambda c: {"cutoffs": c})
    return close_run(
        p, output, "ccnet", STAGES, extra, files, [read[STATS], stats_hashed, stats_scored, stats_kept], read[DEAD], cutoff_extra
    )


def _config_dict(config: CCNetConfig) -> dict:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = CCNetConfig()
    parser.add_argument("--input", required=True, nargs="+", help="glob(s) of WARC/WET/ARC files, gzip or not (local or s3://, gs://...)")
    parser.add_argument("--output", required=True, help="output folder for part-NNNNN.parquet, stats.json, dead_letter.jsonl")
    parser.add_argument("--extractor", default=d.extractor, choices=["resiliparse", "trafilatura"])
    parser.add_argument("--dedup", default=d.dedup_policy, choices=POLICIES, help="line dedup policy (default: %(default)s, as CCNet)")
    parser.add_argument("--dedup-range-bits", type=int, default=d.dedup_range_bits, help="2**N hash ranges reduced in parallel")
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
    parser.add_argument("--read-parts", type=int, default=d.read_parts, help="work items per input file (default: %(default)s); output does not depend on it")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def config_from_args(args) -> CCNetConfig:
    languages = None if args.languages == "all" else tuple(x for x in args.languages.split(",") if x)
    return CCNetConfig(
        extractor=args.extractor,
        dedup_policy=args.dedup,
        dedup_range_bits=args.dedup_range_bits,
        languages=languages,
        lid_threshold=args.lid_threshold,
        lid_model=args.lid_model,
        lm_dir=args.lm_dir,
        cutoffs=args.cutoffs,
        keep_buckets=tuple(x for x in args.keep_buckets.split(",") if x),
        quality_model=None if args.no_quality else args.quality_model,
        quality_threshold=args.quality_threshold,
        batch_records=args.batch_records,
        read_parts=args.read_parts,
    )


def run(args, beam_args: list[str]) -> int:
    config = config_from_args(args)
    paths = expand_inputs(args.input)
    config.check_models()
    fingerprint = input_fingerprint(paths, _config_dict(config))
    if not args.force and is_complete(args.output, fingerprint):
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        return 0
    started = time.time()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        build(p, paths, args.output, config, fingerprint)
    stats = load_stats(args.output)
    print(summary(stats, args.output, time.time() - started))
    return 0


def summary(stats: dict, output: str, seconds: float | None = None) -> str:
    lines = [f"ccnet: {stats['read']} documents read, {stats['kept']} kept -> {output}" + (f" ({seconds:.1f} s)" if seconds else "")]
    for reason, n in stats["dropped"].items():
        lines.append(f"  dropped {reason:<22} {n}")
    if stats.get("cutoffs"):
        lines.append("  perplexity cut-offs (30th/60th percentile): " + json.dumps(stats["cutoffs"]))
    return "\n".join(lines)
