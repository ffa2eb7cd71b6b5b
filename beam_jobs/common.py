"""What every Beam job shares: pipeline options, running a step over batches with its accounting,
writing shards, merging stats, and closing the run (`pipeline.runs.finalize`).

Elements are `(key, pyarrow.RecordBatch)` pairs; keys are `(file_index, batch_index)`, which fixes
a global order that does not depend on how the runner split the work.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.accounting import JobStats, StageStats, merge_stage_stats
from pipeline.dedup import DuplicateTable, LineCensus, census_input, census_parts
from pipeline.runs import finalize, shard_name, write_parquet
from pipeline.schema import to_document_table

STATS = "stats"
DEAD = "dead_letter"

Step = Callable[[pa.RecordBatch], "tuple[pa.RecordBatch, StageStats]"]


# Flags that Beam 2.77 itself writes when it hands the options on (a False boolean without its
# --no_ form), then warns that it cannot parse, in every process of every run.
_BEAM_OWN_FLAGS = {"--direct_runner_use_stacked_bundle", "--pipeline_type_check"}


def _not_beams_own_flags(record: logging.LogRecord) -> bool:
    """Drops Beam's warning about its own flags; a mistyped option of ours is still reported."""
    return not (record.msg == "Discarding unparseable args: %s" and record.args and set(record.args[0]) <= _BEAM_OWN_FLAGS)


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options from the command line; on one machine, the DirectRunner with every core."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if _not_beams_own_flags not in logging.getLogger("apache_beam.options.pipeline_options").filters:
        logging.getLogger("apache_beam.options.pipeline_options").addFilter(_not_beams_own_flags)
    args = list(beam_args)
    given = " ".join(args)
    if "--default_sdk_harness_log_level" not in given:
        args.append("--default_sdk_harness_log_level=WARNING")
    if "--sdk_harness_log_level_overrides" not in given:
        # In worker processes (multi_processing): `__main__` is the harness, which warns on every
        # start that it has no staging folder; the options warning is the one above (the driver,
        # which parses the same options, still reports anything else).
        args.append('--sdk_harness_log_level_overrides={"__main__": "ERROR", "apache_beam.options.pipeline_options": "ERROR"}')
    if "--runner" not in given:
        args.append("--runner=DirectRunner")
        if "--direct_num_workers" not in given:
            args += [f"--direct_num_workers={os.cpu_count() or 1}", "--direct_running_mode=multi_processing"]
    return PipelineOptions(args)


class RunSteps(beam.DoFn):
    """Runs steps in order over each batch; emits the surviving batch and each step's StageStats.

    Side inputs named in `configure` are handed to it with the steps before the first batch, e.g. to
    give the dedup step its duplicate table.
    """

    def __init__(self, steps: list[Step], configure: Callable | None = None):
        self.steps = steps
        self.configure = configure
        self._configured_with = None

    def process(self, element, *side_inputs):
        if self.configure is not None and self._configured_with is not side_inputs[0]:
            self.configure(self.steps, *side_inputs)
            self._configured_with = side_inputs[0]
        key, batch = element
        for step in self.steps:
            batch, stats = step(batch)
            yield beam.pvalue.TaggedOutput(STATS, stats)
        if batch.num_rows:
            yield key, batch


def run_steps(pcoll, label: str, steps: list[Step], *side_inputs, configure: Callable | None = None):
    """Returns (batches, stats) PCollections."""
    out = pcoll | label >> beam.ParDo(RunSteps(steps, configure), *side_inputs).with_outputs(STATS, main="batches")
    return out.batches, out[STATS]


class CensusCombine(beam.CombineFn):
    """LineCensus as a Beam combine: partial censuses merge in any order to the same result."""

    def create_accumulator(self):
        return LineCensus()

    def add_input(self, acc, part):
        return acc.add(*part)

    def merge_accumulators(self, accs):
        accs = list(accs)
        first = accs[0]
        for other in accs[1:]:
            first.merge(other)
        return first

    def compact(self, acc):
        return acc.flush()

    def extract_output(self, acc):
        return acc.duplicates()


def line_census(batches, range_bits: int):
    """The global line census (pipeline/dedup.py): (hash, order) arrays keyed by hash range, one
    reduction per range; returns (range, (duplicated hashes, first holders)) pairs."""
    return (
        batches
        | "CensusParts" >> beam.FlatMap(lambda kb: census_parts(*census_input(kb[1]), range_bits).items())
        | "LineCensus" >> beam.CombinePerKey(CensusCombine())
    )


def set_duplicate_table(steps, parts):
    """`configure` for run_steps: hands the census, as a DuplicateTable, to the dedup step (first)."""
    steps[0].table = DuplicateTable.from_ranges([(r, h, o) for r, (h, o) in parts])


class MergeStats(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats: StageStats):
        if stats.name in acc:
            acc[stats.name].merge(stats)
        else:
            acc[stats.name] = StageStats(stats.name).merge(stats)
        return acc

    def merge_accumulators(self, accs):
        return merge_stage_stats(s for acc in accs for s in acc.values())

    def extract_output(self, acc):
        return acc


class WriteShard(beam.DoFn):
    """Writes one group of batches as one Parquet shard, rows in their global order (`_ord`)."""

    def __init__(self, output: str):
        self.output = output

    def process(self, element):
        shard_index, batches = element
        table = pa.Table.from_batches(list(batches)).sort_by("_ord").combine_chunks()
        name = shard_name(shard_index)
        write_parquet(to_document_table(table), os.path.join(self.output, name) if "://" not in self.output else f"{self.output}/{name}")
        yield name


def write_shards(batches, output: str, shard_of: Callable = lambda key: key[0]):
    """Group batches by shard (default: one shard per input file) and write them; returns shard names."""
    return (
        batches
        | "ShardKey" >> beam.Map(lambda kb: (shard_of(kb[0]), kb[1]))
        | "GroupShard" >> beam.GroupByKey()
        | "WriteShard" >> beam.ParDo(WriteShard(output))
    )


class Finalize(beam.DoFn):
    def __init__(self, output: str, job: str, stage_order: list[str], extra: dict):
        self.output, self.job, self.stage_order, self.extra = output, job, stage_order, extra

    def process(self, _, files, stats, dead, *more):
        job_stats = JobStats.from_merged(self.job, self.stage_order, stats, **self.extra)
        for extra in more:
            job_stats.extra.update(extra)
        finalize(self.output, job_stats, sorted(files), list(dead))
        yield job_stats.to_dict()


def close_run(p, output: str, job: str, stage_order: list[str], extra: dict, files, stats_parts: Iterable, dead_letters=None, *more_extra):
    stats = tuple(stats_parts) | "FlattenStats" >> beam.Flatten() | "MergeStats" >> beam.CombineGlobally(MergeStats())
    if dead_letters is None:
        dead_letters = p | "NoDeadLetters" >> beam.Create([])
    return (
        p
        | "CloseRun" >> beam.Create([None])
        | "Finalize"
        >> beam.ParDo(
            Finalize(output, job, stage_order, extra),
            beam.pvalue.AsList(files),
            beam.pvalue.AsSingleton(stats),
            beam.pvalue.AsList(dead_letters),
            *[beam.pvalue.AsSingleton(m) for m in more_extra],
        )
    )
