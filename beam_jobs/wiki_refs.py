"""`corpusmill wiki-refs`: the URLs Wikipedia XML dumps cite (`pipeline/wiki_refs.py`), distinct and
sorted, one a line: the list `train-quality --cited-urls` takes its positives from.

A Beam job over the dump files (a real English dump comes in ~30 parts): each part is read by one
worker; the URLs are made distinct in Beam and written sorted, so the file does not depend on the
runner; the counts go to `<output>.json`.
"""
from __future__ import annotations

import argparse
import json

import apache_beam as beam

from beam_jobs.common import beam_pipeline
from pipeline.runs import atomic_write_bytes, expand_inputs
from pipeline.wiki_refs import cited_urls


class ReadCitedUrls(beam.DoFn):
    def __init__(self, with_templates: bool):
        self.with_templates = with_templates

    def process(self, path):
        counts: dict = {}
        for url in cited_urls(path, counts, self.with_templates):
            yield url
        yield beam.pvalue.TaggedOutput("counts", counts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", help="Wikipedia XML dump(s) (.xml, .xml.bz2, .xml.gz)")
    parser.add_argument("--output", required=True, help="text file: one URL a line (and <output>.json: counts)")
    parser.add_argument("--template-urls", action="store_true",
                        help="also the url= of citation templates on any line (RedPajama: only URLs inside <ref>...</ref> lines)")


def run(args, beam_args: list[str]) -> int:
    paths = expand_inputs(args.input)
    result: dict = {}

    def write(urls):
        urls = sorted(urls)
        atomic_write_bytes(args.output, "".join(u + "\n" for u in urls).encode())
        return len(urls)

    def total(all_counts):
        out: dict = {}
        for c in all_counts:
            for k, v in c.items():
                out[k] = out.get(k, 0) + v
        return out

    with beam_pipeline(beam_args) as p:
        read = (p | "Dumps" >> beam.Create(paths) | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(ReadCitedUrls(args.template_urls)).with_outputs("counts", main="urls"))
        distinct = read.urls | "Distinct" >> beam.Distinct() | "All" >> beam.combiners.ToList() | "Write" >> beam.Map(write)
        counts = read.counts | "AllCounts" >> beam.combiners.ToList() | "Sum" >> beam.Map(total)
        (
            counts
            | "Card" >> beam.Map(lambda c, n: {"inputs": paths, "template_urls_option": args.template_urls, **c, "distinct_urls": n},
                                 beam.pvalue.AsSingleton(distinct))
            | beam.Map(lambda card: atomic_write_bytes(args.output + ".json", (json.dumps(card, indent=2, sort_keys=True) + "\n").encode()))
        )
    result = json.load(open(args.output + ".json"))
    print(f"{result['distinct_urls']} distinct cited URLs ({result.get('ref_urls', 0)} in <ref> lines"
          + (f", {result.get('template_urls', 0)} from citation templates" if args.template_urls else "") + f") -> {args.output}")
    return 0
