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

from pipeline.job import exit_without_collecting
from pipeline.plan import FilePhase, Plan, Work, barrier_result, finish_barrier, run_barrier_item, run_file_task, start_barrier


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
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)  # a failure reaches the user as one line (beam_jobs/cli.py)
    if "--default_sdk_harness_log_level" not in given:
        args.append(f"--default_sdk_harness_log_level={'CRITICAL' if quiet else 'WARNING'}")
    if "--sdk_harness_log_level_overrides" not in given:
        # In worker processes (multi_processing): `__main__` is the harness, which warns on every
        # start that it has no staging folder; the options warning is the one above (the driver,
        # which parses the same options, still reports anything else).
        args.append('--sdk_harness_log_level_overrides={"__main__": "ERROR", "apache_beam.options.pipeline_options": "ERROR"}')
    if "--no_pipeline_type_check" not in given and "--pipeline_type_check" not in given:
        # Type hints are checked while the graph is built (about 0.5 s of signature inspection per run);
        # nothing in the graph is typed beyond file indexes, so the check finds nothing to check.
        args.append("--no_pipeline_type_check")
    if "--runner" not in given:
        args.append("--runner=DirectRunner")
        if "--direct_num_workers" not in given:
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
        if "--direct_running_mode" not in given:
            # One worker runs in this process: a worker process would only add its start-up (~3 s:
            # interpreter, imports, models) and the data channel; more workers are processes.
            workers = PipelineOptions(args).get_all_options().get("direct_num_workers") or 1
            args.append(f"--direct_running_mode={'in_memory' if workers == 1 else 'multi_processing'}")
    return PipelineOptions(args)


class RunFilePhase(beam.DoFn):
    """One file phase on one input file (skipped if its completion marker exists)."""

    def __init__(self, plan: Plan, phase: FilePhase, work_root: str):
        self.plan, self.phase, self.work_root = plan, phase, work_root

    def setup(self):
        exit_without_collecting()  # a worker process: see pipeline/job.py

    def process(self, element, *after):
        file_index, path = element
        work = Work(self.work_root)
        run_file_task(self.phase, file_index, path, work, barrier_result(self.plan, self.phase, work))
        yield file_index


def _done(pcoll, label: str, then=lambda: 0):
    """One element once every element of `pcoll` is there: a dependency for a side input. A grouping
    on one key, not CombineGlobally, whose result Beam's DaskRunner (2.77) delivers once per
    partition; and not CombinePerKey, whose three ParDos cost the graph's construction more than the
    one value per file or work item gathered here (Beam inspects every ParDo's DoFn several times:
    about 12 ms per ParDo per run, measured). `then()` runs once there, and its result is the element."""
    return (pcoll | f"Key_{label}" >> beam.Map(lambda _: (0, None)) | f"Count_{label}" >> beam.GroupByKey()
            | f"Done_{label}" >> beam.Map(lambda _, then=then: then()))


def _spread(pcoll, label: str):
    """Elements `(index, ...)` spread over the workers by their index: a grouping on the index, which
    the runner distributes (Beam's Reshuffle does the same with random keys and two more ParDos)."""
    return (pcoll | f"Key{label}" >> beam.Map(lambda e: (e[0], e)) | f"Group{label}" >> beam.GroupByKey()
            | label >> beam.FlatMap(lambda kv: kv[1]))


def build_plan(p, plan: Plan, paths: list[str], work: Work):
    """The plan as a Beam graph. Only file indexes travel through Beam: documents, hashes, summaries and
    barrier results stay in the work folder (`pipeline/plan.py`), so what the runner does with elements
    (fusion, retries, duplicates) cannot change the output. A phase waits for the barrier before it
    through a side input; a barrier's steps are chained on the one element that says the step
    before it is complete, so a plan is a few fused stages (each stage costs every worker a round trip)."""
    files = _spread(p | "Files" >> beam.Create(list(enumerate(paths)), reshuffle=False), "SpreadFiles")
    n_files = len(paths)
    after = []  # the side input the next phase waits for
    ready = None  # one element once the step before is complete
    previous = None
    for step in plan.steps:
        if isinstance(step, FilePhase):
            done = files | f"Phase_{step.name}" >> beam.ParDo(RunFilePhase(plan, step, work.root), *after)
            ready, previous = _done(done, step.name), step
            after = [beam.pvalue.AsList(ready)]
            continue
        name = step.name
        items = (
            ready
            | f"Items_{name}" >> beam.FlatMap(lambda _, b=step, ph=previous: start_barrier(b, ph, n_files, Work(work.root)))
        )
        items = _spread(items, f"SpreadItems_{name}") | f"Run_{name}" >> beam.Map(
            lambda it, b=step: run_barrier_item(b, it[0], it[1], Work(work.root)))
        # `ready` joins the items so that a barrier without items is finished too.
        joined = (ready, items) | f"Join_{name}" >> beam.Flatten()
        ready = _done(joined, name, then=lambda b=step: finish_barrier(b, Work(work.root)))
        after = [beam.pvalue.AsList(ready)]


def local_runner(options: PipelineOptions):
    """The runner of a run that names none: Beam's FnApiRunner, which Beam 2.77's DirectRunner would
    pick for a batch pipeline like ours after first trying its PrismRunner (a Go binary it downloads
    from GitHub and starts as a job service: seconds on every run where it is reachable, a failed
    download where it is not). `--runner DirectRunner` still gets Beam's own choice."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def beam_pipeline(beam_args: list[str]) -> beam.Pipeline:
    """The Beam pipeline of every job: on the runner the options name, else on `local_runner`."""
    options = pipeline_options(beam_args)
    runner = None if "--runner" in " ".join(beam_args) else local_runner(options)
    return beam.Pipeline(runner=runner, options=options)


def beam_executor(beam_args: list[str]):
    """An executor for `pipeline.job.run_plan`: the plan on the Beam runner the options name."""

    def execute(plan: Plan, paths: list[str], work: Work) -> None:
        with beam_pipeline(beam_args) as p:
            build_plan(p, plan, paths, work)

    return execute
