"""`corpusmill source SOURCE`: one of the six non-web LLaMA sources on Apache Beam (steps:
`pipeline/sources/<source>.py`, rules and thresholds: docs/sources.md).

Graph:
    files -> Read<source> -> Reshuffle -> [before steps]
          -> global barrier, by the source's kind:
               lines   (C4):     line census per hash range (CombinePerKey, as `corpusmill ccnet`)
               exact   (GitHub): the same census over one content hash per file
               minhash (Books):  LSH band buckets (GroupByKey) -> verified pairs -> clusters
                                 (global combine) -> the `_ord`s to drop
             as a side input of
          -> [after steps] -> GroupByKey(input file) -> part-NNNNN.parquet
    + stats (merged StageStats) + dead letters -> Finalize (stats.json last)
Every choice between duplicates is by `_ord` (file, record), so the output does not depend on the
number of workers or the order the runner delivers elements.
"""
from __future__ import annotations

import argparse
import time

import apache_beam as beam

from beam_jobs.common import DEAD, STATS, close_run, line_census, pipeline_options, run_steps, set_duplicate_table, write_shards
from pipeline.accounting import StageStats
from pipeline.dedup import POLICIES
from pipeline.runs import input_fingerprint, is_complete, load_stats
from pipeline import sources


class ReadSource(beam.DoFn):
    def __init__(self, name: str, config):
        self.name, self.config = name, config

    def process(self, element):
        file_index, path = element
        module = sources.get(self.name)
        stats, dead = StageStats("read"), []
        for batch_no, batch in module.read(path, file_index, stats, dead, self.config):
            yield (file_index, batch_no), batch
        yield beam.pvalue.TaggedOutput(STATS, stats)
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)


class ClusterPairs(beam.CombineFn):
    """Collects verified similar pairs; outputs the sorted `_ord`s to drop (all but each cluster's first)."""

    def create_accumulator(self):
        return set()

    def add_input(self, acc, pair):
        acc.add(pair)
        return acc

    def merge_accumulators(self, accs):
        out = set()
        for a in accs:
            out |= a
        return out

    def extract_output(self, acc):
        from pipeline.sources.books import duplicates_to_drop

        return duplicates_to_drop(sorted(acc))


def _set_drop(steps, drop):
    steps[0].drop = drop


def _bucket_pairs(item, threshold):
    from pipeline.sources.books import verified_pairs

    _, members = item
    members = list(members)
    return verified_pairs(members, threshold) if len(members) > 1 else []


def _band_items(batch, bands, rows):
    from pipeline.sources.books import band_keys, signatures_of

    for order, sig in signatures_of(batch):
        for key in band_keys(sig, bands, rows):
            yield key, (order, sig)


def build(p, name: str, paths: list[str], output: str, config, fingerprint: str):
    module = sources.get(name)
    read = (
        p
        | "Files" >> beam.Create(list(enumerate(paths)))
        | f"Read_{name}" >> beam.ParDo(ReadSource(name, config)).with_outputs(STATS, DEAD, main="batches")
    )
    raw = read.batches | "SpreadBatches" >> beam.Reshuffle()
    before, stats_before = run_steps(raw, "Before", config.before())
    stats_parts = [read[STATS], stats_before]
    after_steps = config.after()
    if module.GLOBAL in ("lines", "exact"):
        census = line_census(before, config.dedup_range_bits)
        kept, stats_after = run_steps(before, "After", after_steps, beam.pvalue.AsList(census), configure=set_duplicate_table)
        stats_parts.append(stats_after)
    elif module.GLOBAL == "minhash":
        drop = (
            before
            | "BandKeys" >> beam.FlatMap(lambda kb: _band_items(kb[1], config.bands, config.rows))
            | "Buckets" >> beam.GroupByKey()
            | "VerifiedPairs" >> beam.FlatMap(_bucket_pairs, config.threshold)
            | "Clusters" >> beam.CombineGlobally(ClusterPairs())
        )
        kept, stats_after = run_steps(before, "After", after_steps, beam.pvalue.AsSingleton(drop), configure=_set_drop)
        stats_parts.append(stats_after)
    else:
        kept = before
    files = write_shards(kept, output)
    extra = {"fingerprint": fingerprint, "source": name, "config": sources.config_dict(config)}
    return close_run(p, output, name, module.STAGES, extra, files, stats_parts, read[DEAD])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=sources.NAMES, help="which source's job to run")
    parser.add_argument("--input", required=True, nargs="+",
                        help="glob(s): c4 *.json(.gz); github *.jsonl(.gz) or repository folders; wikipedia *.xml(.bz2); "
                        "books *.txt(.gz); arxiv paper folders or *.tar.gz; stackexchange <site>/Posts.xml")
    parser.add_argument("--output", required=True, help="output folder for part-NNNNN.parquet, stats.json, dead_letter.jsonl")
    parser.add_argument("--languages", default=None,
                        help="c4: languages kept by lid.176 (default en); wikipedia: dump languages kept (default: the paper's 20); 'all' keeps every one")
    parser.add_argument("--lid-threshold", type=float, default=0.5, help="c4: lid.176 score threshold (default: %(default)s)")
    parser.add_argument("--lid-model", default=None, help="c4: fastText lid.176 (default: models/lid.176.ftz)")
    parser.add_argument("--dedup", default=None, choices=POLICIES, help="c4: line dedup policy (default: keep_first, as C4)")
    parser.add_argument("--licenses", default=None, help="github: allowed SPDX licences, comma-separated (default: MIT,Apache-2.0,BSD-2-Clause,BSD-3-Clause)")
    parser.add_argument("--dump-language", default=None, help="wikipedia: language of a dump that names none")
    parser.add_argument("--near-dup-threshold", type=float, default=None, help="books: Jaccard threshold of near-duplicates (default: 0.9)")
    parser.add_argument("--sites", default=None, help="stackexchange: sites to keep, comma-separated folder names, e.g. coffee.stackexchange.com (default: all)")
    parser.add_argument("--site", default=None, help="stackexchange: the site of the input when its folder does not name it")
    parser.add_argument("--batch-records", type=int, default=None, help="documents per batch (the unit of parallel work)")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def run(args, beam_args: list[str]) -> int:
    module = sources.get(args.source)
    config = module.config_from_args(args)
    paths = sources.expand(module, args.input)
    config.check_models()
    fingerprint = input_fingerprint(paths, {"source": args.source, **sources.config_dict(config)})
    if not args.force and is_complete(args.output, fingerprint):
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        return 0
    started = time.time()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        build(p, args.source, paths, args.output, config, fingerprint)
    print(summary(load_stats(args.output), args.output, time.time() - started))
    return 0


def summary(stats: dict, output: str, seconds: float | None = None) -> str:
    lines = [f"source {stats['job']}: {stats['read']} documents read, {stats['kept']} kept -> {output}" + (f" ({seconds:.1f} s)" if seconds else "")]
    for reason, n in stats["dropped"].items():
        lines.append(f"  dropped {reason:<24} {n}")
    return "\n".join(lines)
