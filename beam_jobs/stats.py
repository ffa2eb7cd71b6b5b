"""The Beam job behind `corpusmill stats` (the command is `reporting/command.py`) for large outputs.

    (folder, shard) elements -> Reshuffle -> summarise each shard -> CombineGlobally(merge) -> result file

Statistics come from `reporting/shard_stats.py` (one pass per shard, mergeable). The merge is exact and
order-independent, so this gives the in-process report byte for byte. The merged result reaches the
driver through a small JSON file in Beam's `--temp_location` (default: the local temp folder, right
for the DirectRunner; give a gs:// or s3:// folder on a distributed runner).
"""
from __future__ import annotations

import json
import os
import tempfile
import uuid

from reporting.shard_stats import FolderAccumulator, Target, sentencepiece_counter, summarise_shard


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


def summarise_with_beam(targets: list[Target], tokenizer: str | None, beam_args: list[str]) -> list[FolderAccumulator]:
    import apache_beam as beam

    from beam_jobs.common import beam_pipeline
    from pipeline.runs import atomic_write_bytes, read_bytes

    work_dir = temp_location(beam_args) or tempfile.gettempdir()
    result_path = os.path.join(work_dir, f"corpusmill-stats-{uuid.uuid4().hex}.json") if "://" not in work_dir else f"{work_dir}/corpusmill-stats-{uuid.uuid4().hex}.json"
    elements = [(i, shard) for i, t in enumerate(targets) for shard in t.shards]

    def write_result(state):
        atomic_write_bytes(result_path, json.dumps(state, sort_keys=True).encode())

    with beam_pipeline(beam_args) as p:
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


def temp_location(beam_args: list[str]) -> str | None:
    """Beam's --temp_location (a folder every worker and this process can reach, e.g. gs://...), if given."""
    for i, arg in enumerate(beam_args):
        if arg.startswith("--temp_location="):
            return arg.split("=", 1)[1]
        if arg == "--temp_location" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return None
