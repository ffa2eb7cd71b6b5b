"""`corpusmill stats PATH`: what a job made, before GPU hours are spent on it.

PATH is a document-shard folder, a token-shard folder (manifest.json) or a run folder (subfolders
are job outputs). Statistics come from `pipeline/shard_stats.py` (one pass per shard, mergeable),
rendering from `pipeline/stats_report.py`.

Small outputs are summarised in this process, one shard at a time. Above `--beam-above-mb` (or with
`--beam`) a Beam job does it:

    (folder, shard) elements -> Reshuffle -> summarise each shard -> CombineGlobally(merge) -> result file

The merge is exact and order-independent, so both give the same report. The merged result reaches
this process through a small JSON file in Beam's `--temp_location` (default: the local temp folder,
right for the DirectRunner; give a gs:// or s3:// folder on a distributed runner).

Exit status: 0, or 1 when a shard or a folder's metadata could not be read (it is named, and the
rest is still summarised).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid

from pipeline.shard_stats import FolderAccumulator, Target, build_report, discover, sentencepiece_counter, summarise_folder, summarise_shard


class SummariseShard:
    """Picklable per-shard summariser; loads the tokenizer (if any) once per worker."""

    def __init__(self, targets: list[Target], tokenizer: str | None):
        self.targets, self.tokenizer = targets, tokenizer
        self._counter = None

    def __call__(self, element):
        index, shard = element
        target = self.targets[index]
        if self.tokenizer and target.kind == "documents" and self._counter is None:
            self._counter = sentencepiece_counter(self.tokenizer)
        return index, summarise_shard(target, shard, self._counter if target.kind == "documents" else None)


def _merge_combine_fn():
    import apache_beam as beam

    class MergeFolders(beam.CombineFn):
        """Accumulator: folder index -> FolderAccumulator. Sums only, so any merge order gives the same result."""

        def create_accumulator(self):
            return {}

        def add_input(self, acc, item):
            index, result = item
            acc.setdefault(index, FolderAccumulator()).add(result)
            return acc

        def merge_accumulators(self, accs):
            out = {}
            for acc in accs:
                for index, folder in acc.items():
                    out.setdefault(index, FolderAccumulator()).merge(folder)
            return out

        def extract_output(self, acc):
            return {str(i): a.to_state() for i, a in sorted(acc.items())}

    return MergeFolders()


def summarise_with_beam(targets: list[Target], tokenizer: str | None, beam_args: list[str], work_dir: str | None = None) -> list[FolderAccumulator]:
    import apache_beam as beam

    from beam_jobs.common import pipeline_options
    from pipeline.runs import atomic_write_bytes, read_bytes

    work_dir = work_dir or tempfile.gettempdir()
    result_path = os.path.join(work_dir, f"corpusmill-stats-{uuid.uuid4().hex}.json") if "://" not in work_dir else f"{work_dir}/corpusmill-stats-{uuid.uuid4().hex}.json"
    elements = [(i, shard) for i, t in enumerate(targets) for shard in t.shards]

    def write_result(state):
        atomic_write_bytes(result_path, json.dumps(state, sort_keys=True).encode())

    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
        (
            p
            | "Shards" >> beam.Create(elements)
            | "Spread" >> beam.Reshuffle()
            | "Summarise" >> beam.Map(SummariseShard(targets, tokenizer))
            | "Merge" >> beam.CombineGlobally(_merge_combine_fn())
            | "WriteResult" >> beam.Map(write_result)
        )
    state = json.loads(read_bytes(result_path))
    if "://" not in result_path:
        os.remove(result_path)
    return [FolderAccumulator.from_state(state[str(i)]) if str(i) in state else FolderAccumulator() for i in range(len(targets))]


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


def _temp_location(beam_args: list[str]) -> str | None:
    """Beam's --temp_location (a folder every worker and this process can reach, e.g. gs://...), if given."""
    for i, arg in enumerate(beam_args):
        if arg.startswith("--temp_location="):
            return arg.split("=", 1)[1]
        if arg == "--temp_location" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return None


def compute_report(path: str, tokenizer: str | None = None, use_beam: bool | None = None, beam_above_mb: float = 1024.0, beam_args: list[str] | None = None) -> dict:
    kind, targets = discover(path)
    if use_beam is None:
        use_beam = sum(t.shard_bytes() for t in targets) > beam_above_mb * 1e6
    if use_beam:
        accumulators = summarise_with_beam(targets, tokenizer, list(beam_args or []), _temp_location(beam_args or []))
    else:
        accumulators = summarise_in_process(targets, tokenizer)
    report = build_report(path, kind, targets, accumulators)
    report["tokenizer_for_documents"] = tokenizer
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a document-shard folder, a token-shard folder (manifest.json) or a run folder")
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
    from pipeline.stats_report import render_terminal, to_json, write_html

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
