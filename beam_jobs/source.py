"""`corpusmill source SOURCE`: one of the six non-web LLaMA sources on Apache Beam (steps:
`pipeline/sources/<source>.py`, rules and thresholds: docs/sources.md; the plan: `pipeline.sources.plan`).

Global barriers by the source's kind: `lines` (C4) the line census per hash range, as `corpusmill
ccnet`; `exact` (GitHub) the same census over one content hash per file; `minhash` (Books) LSH
clusters over every book's signature. Every choice between duplicates is by `_ord` (file, record),
so the output does not depend on the number of workers or the order the runner delivers elements.
"""
from __future__ import annotations

import argparse
import time

from beam_jobs.common import beam_executor
from pipeline import sources
from pipeline.dedup import POLICIES
from pipeline.job import run_plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=sources.NAMES, help="which source's job to run")
    parser.add_argument("--input", required=True, nargs="+",
                        help="glob(s): c4 *.json(.gz); github *.jsonl(.gz) or repository folders; wikipedia *.xml(.bz2); "
                        "books *.txt(.gz); arxiv paper folders or *.tar.gz; stackexchange <site>/Posts.xml")
    parser.add_argument("--output", required=True, help="output folder for part-NNNNN.parquet, stats.json, dead_letter.jsonl")
    parser.add_argument("--languages", default=None,
                        help="c4: languages kept by lid.176 (default: all, label only, for released C4; en for --c4-rules raw-pages); wikipedia: dump languages kept (default: the paper's 20); 'all' keeps every one")
    parser.add_argument("--lid-threshold", type=float, default=0.5, help="c4: lid.176 score threshold (default: %(default)s)")
    parser.add_argument("--lid-model", default=None, help="c4: fastText lid.176 (default: models/lid.176.ftz)")
    parser.add_argument("--dedup", default=None, choices=POLICIES, help="c4: line dedup policy (default: keep_first, as C4)")
    parser.add_argument("--licenses", default=None, help="github: allowed licence prefixes, any case, comma-separated (default: mit,bsd,apache)")
    parser.add_argument("--dump-language", default=None, help="wikipedia: language of a dump that names none")
    parser.add_argument("--near-dup-threshold", type=float, default=None, help="books: Jaccard threshold of near-duplicates (default: 0.9)")
    parser.add_argument("--sites", default=None, help="stackexchange: sites to keep, comma-separated folder names, e.g. coffee.stackexchange.com, or 'all' (default: the 28 largest, see --top-sites)")
    parser.add_argument("--site", default=None, help="stackexchange: the site of the input when its folder does not name it")
    parser.add_argument("--c4-rules", default=None, choices=("released", "raw-pages"),
                        help="c4: 'released' keeps released C4 as it is (RedPajama, default); 'raw-pages' applies C4's clean_page, line dedup and English LID")
    parser.add_argument("--top-sites", type=int, default=None,
                        help="stackexchange: keep the N sites with most posts among the inputs (default: 28, as RedPajama); 0 keeps every site")
    parser.add_argument("--github-tokenizer", default=None,
                        help="github: SentencePiece model for the alphabetic-characters-per-token >= 1.5 rule (default: off; RedPajama used Pythia's tokenizer)")
    parser.add_argument("--arxiv-keep-appendix", action="store_true",
                        help="arxiv: keep the appendix and remove only the bibliography (default: cut at \\appendix, as RedPajama)")
    parser.add_argument("--arxiv-macros-with-arguments", action="store_true",
                        help="arxiv: also expand user macros that take arguments (default: argument-less only, as RedPajama)")
    parser.add_argument("--batch-records", type=int, default=None, help="documents per batch (the unit of parallel work)")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def run(args, beam_args: list[str]) -> int:
    module = sources.get(args.source)
    config = module.config_from_args(args)
    paths = sources.expand(module, args.input)
    config.check_models()
    started = time.time()
    stats = run_plan(sources.plan(args.source, config, args.output), paths, args.output,
                     {"source": args.source, **sources.config_dict(config)}, force=args.force,
                     executor=beam_executor(beam_args), extra={"source": args.source})
    if stats is None:
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        return 0
    print(summary(stats, args.output, time.time() - started))
    return 0


def summary(stats: dict, output: str, seconds: float | None = None) -> str:
    lines = [f"source {stats['job']}: {stats['read']} documents read, {stats['kept']} kept -> {output}" + (f" ({seconds:.1f} s)" if seconds else "")]
    for reason, n in stats["dropped"].items():
        lines.append(f"  dropped {reason:<24} {n}")
    return "\n".join(lines)
