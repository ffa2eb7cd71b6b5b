"""`corpusmill stats PATH`: what a job made, before GPU hours are spent on it.

PATH is a document-shard folder, a token-shard folder (manifest.json), a trainer run folder
(metrics.jsonl) or a run folder (subfolders are job outputs; its report opens with the whole run at
a glance, `reporting/overview.py`). Statistics come from `reporting/shard_stats.py` (one pass per
shard, mergeable), rendering from `reporting/render.py`.

Small outputs are summarised in this process, one shard at a time; above `--beam-above-mb` (or with
`--beam`) the Beam job of `beam_jobs/stats.py` does it, with the same result.

Exit status: 0, or 1 when a shard or a folder's metadata could not be read (it is named, and the
rest is still summarised).
"""
from __future__ import annotations

import argparse
import os
import sys

from reporting.shard_stats import FolderAccumulator, Target, build_report, discover, sentencepiece_counter, summarise_folder


def summarise_in_process(targets: list[Target], tokenizer: str | None) -> list[FolderAccumulator]:
    counter = sentencepiece_counter(tokenizer) if tokenizer else None
    return [summarise_folder(t, counter if t.kind == "documents" else None) for t in targets]


def find_tokenizer(targets: list[Target]) -> str | None:
    """A tokenizer named by a token-shard manifest in the run, if that file exists here."""
    for t in targets:
        path = ((t.manifest or {}).get("tokenizer") or {}).get("path")
        if path and os.path.isfile(path):
            return path
    return None


def compute_report(path: str, tokenizer: str | None = None, use_beam: bool | None = None, beam_above_mb: float = 1024.0, beam_args: list[str] | None = None) -> dict:
    kind, targets = discover(path)
    if use_beam is None:
        use_beam = sum(t.shard_bytes() for t in targets) > beam_above_mb * 1e6
    if use_beam:
        from beam_jobs.stats import summarise_with_beam

        accumulators = summarise_with_beam(targets, tokenizer, list(beam_args or []))
    else:
        accumulators = summarise_in_process(targets, tokenizer)
    report = build_report(path, kind, targets, accumulators)
    report["tokenizer_for_documents"] = tokenizer
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a document-shard folder, a token-shard folder (manifest.json), a trainer run folder (metrics.jsonl) or a run folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    parser.add_argument("--html", metavar="DIR", help="also write DIR/index.html with PNG plots next to it")
    parser.add_argument("--beam", action="store_true", help="summarise with a Beam job whatever the size")
    parser.add_argument("--beam-above-mb", type=float, default=1024.0, help="use Beam above this many MB of shards (default: %(default)s)")
    parser.add_argument("--tokenizer", help="SentencePiece model to count tokens of document shards (default: the run's token manifest's, if present)")


def run(args, beam_args: list[str]) -> int:
    tokenizer = args.tokenizer
    if tokenizer and not os.path.isfile(tokenizer):
        raise FileNotFoundError(f"tokenizer {tokenizer!r} not found")
    if tokenizer is None:
        _, targets = discover(args.path)
        tokenizer = find_tokenizer(targets)
    report = compute_report(args.path, tokenizer, True if args.beam else None, args.beam_above_mb, beam_args)
    from reporting.render import render_terminal, to_json, write_html

    if args.json:
        sys.stdout.write(to_json(report))
    else:
        render_terminal(report)
    if args.html:
        index = write_html(report, args.html)
        print(f"HTML report: {os.path.abspath(index)}", file=sys.stderr if args.json else sys.stdout)
    for p in report["problems"]:
        print(f"corpusmill stats: unreadable {p['file']}: {p['error']}", file=sys.stderr)
    return 1 if report["problems"] else 0
