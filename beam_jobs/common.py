"""What every Beam job shares: pipeline options, and the Beam executor of a plan (`pipeline/plan.py`).

A plan's per-file phases become ParDos over the input files; its barriers become a global combine of
the phases' summaries, a ParDo over the barrier's work items (e.g. hash ranges), and a singleton side
input for the next phase. The same phase and barrier code runs in `pipeline.plan.run_local`.
"""
from __future__ import annotations

import logging
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.plan import Barrier, FilePhase, Plan, Work, run_barrier_item, run_file_task, save_barrier_result


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
    quiet = os.environ.get("CORPUSMILL_QUIET") == "1"
    if quiet:
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)  # a failure reaches the user as one line (pipeline/cli.py)
    if "--default_sdk_harness_log_level" not in given:
        args.append(f"--default_sdk_harness_log_level={'CRITICAL' if quiet else 'WARNING'}")
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


class RunFilePhase(beam.DoFn):
    """One file phase on one input file (skipped if its completion marker exists); emits the summary."""

    def __init__(self, phase: FilePhase, work_root: str):
        self.phase, self.work_root = phase, work_root

    def process(self, element, barrier=None):
        file_index, path = element
        yield run_file_task(self.phase, file_index, path, Work(self.work_root), barrier).summary


class BarrierCombine(beam.CombineFn):
    """A barrier's reduction of summaries (commutative and associative, so any runner's order works)."""

    def __init__(self, barrier: Barrier):
        self.barrier = barrier

    def create_accumulator(self):
        return self.barrier.create()

    def add_input(self, acc, summary):
        return self.barrier.add(acc, summary)

    def merge_accumulators(self, accs):
        return self.barrier.merge(list(accs))

    def extract_output(self, acc):
        return acc


def _items(reduced, barrier):
    return list(enumerate(barrier.items(reduced)))


def _run_item(element, reduced, barrier, work_root):
    index, item = element
    return run_barrier_item(barrier, index, item, Work(work_root), reduced)


def _barrier_result(_, reduced, outputs, barrier, work_root):
    result = barrier.result(reduced, list(outputs))
    save_barrier_result(barrier, Work(work_root), result)
    return result


def build_plan(p, plan: Plan, paths: list[str], work: Work):
    """The plan as a Beam graph. Only file indexes, summaries and small barrier results travel through
    Beam; documents and hashes stay in the work folder. A barrier's result reaches the next phase as a
    singleton side input, which also orders the phases."""
    files = p | "Files" >> beam.Create(list(enumerate(paths))) | "SpreadFiles" >> beam.Reshuffle()
    summaries, result = None, None
    for step in plan.steps:
        if isinstance(step, FilePhase):
            side = [beam.pvalue.AsSingleton(result)] if result is not None else []
            summaries = files | f"Phase_{step.name}" >> beam.ParDo(RunFilePhase(step, work.root), *side)
            continue
        name = step.name
        reduced = summaries | f"Reduce_{name}" >> beam.CombineGlobally(BarrierCombine(step))
        outputs = (
            reduced
            | f"Items_{name}" >> beam.FlatMap(_items, step)
            | f"SpreadItems_{name}" >> beam.Reshuffle()
            | f"Run_{name}" >> beam.Map(_run_item, beam.pvalue.AsSingleton(reduced), step, work.root)
        )
        result = (
            p
            | f"Start_{name}" >> beam.Create([None])
            | f"Result_{name}" >> beam.Map(_barrier_result, beam.pvalue.AsSingleton(reduced), beam.pvalue.AsList(outputs), step, work.root)
        )


def beam_executor(beam_args: list[str]):
    """An executor for `pipeline.job.run_plan`: the plan on the Beam runner the options name."""

    def execute(plan: Plan, paths: list[str], work: Work) -> None:
        with beam.Pipeline(options=pipeline_options(beam_args)) as p:
            build_plan(p, plan, paths, work)

    return execute
