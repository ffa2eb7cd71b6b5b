"""What every Beam job shares: pipeline options, and the Beam executor of a plan (`pipeline/plan.py`).

A plan's per-file phases become ParDos over the input files; its barriers become a global combine of
the phases' summaries, a ParDo over the barrier's work items (e.g. hash ranges), and a singleton side
input for the next phase. The same phase and barrier code runs in `pipeline.plan.run_local`.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import typing
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.job import exit_without_collecting
from pipeline.runs import atomic_write_bytes
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


class FileClaims:
    """Which worker runs which file of a phase, so that a worker that finishes its share early takes
    files from the others' shares. A runner hands each worker a fixed share of the file elements
    (Beam's FnApiRunner: every n-th element to each of its n workers, at the start of the stage), so
    without this the phase lasts as long as its slowest worker's share: a core slowed by its
    neighbours or one large file holds the whole run up (datatrove's local executor hands out tasks
    one by one for the same reason).

    A claim is a file created with O_EXCL in the run's work folder (`claims/<run token>/<phase>/`),
    so on a local or shared POSIX folder exactly one worker runs each file. A run token per run: the
    claims of a killed run do not hold up its rerun (the completion markers decide what is done). On
    an object store (no exclusive create) every worker runs its own share, as the runner split it."""

    def __init__(self, work_root: str, token: str, phase: str):
        run = None if "://" in work_root else os.path.join(work_root, "claims", token)
        self.folder = None if run is None else os.path.join(run, phase)
        self.paths_file = None if run is None else os.path.join(run, "paths.json")
        self._paths = None

    def write_paths(self, paths: list[str]) -> None:
        """The input list, for a worker that runs a file it was not handed (written by the driver)."""
        if self.paths_file is not None:
            atomic_write_bytes(self.paths_file, json.dumps(paths).encode())

    def paths(self) -> list[str]:
        if self._paths is None:
            with open(self.paths_file, "rb") as f:
                self._paths = json.load(f)
        return self._paths

    def claim(self, file_index: int) -> bool:
        if self.folder is None:
            return True
        os.makedirs(self.folder, exist_ok=True)
        try:
            os.close(os.open(os.path.join(self.folder, f"{file_index:06d}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def unclaimed(self) -> list[tuple[int, str]]:
        """The files nobody has claimed yet, last first: the end of the other workers' shares, where
        they get to last (the runner splits in index order)."""
        if self.folder is None:
            return []
        os.makedirs(self.folder, exist_ok=True)
        taken = set(os.listdir(self.folder))
        paths = self.paths()
        return [(i, paths[i]) for i in reversed(range(len(paths))) if f"{i:06d}" not in taken]


# Declared, not inferred: Beam infers an undeclared output type from the bytecode of `process` and
# of every function it calls (here the whole phase: 0.1 s of each run's start, measured).
@beam.typehints.with_output_types(typing.Tuple[int, None])
class RunFilePhase(beam.DoFn):
    """One file phase on the input files: the file of each element, unless another worker took it,
    and then, at the end of the worker's share, any file nobody has started (`FileClaims`). A file
    whose completion marker exists is skipped."""

    def __init__(self, plan: Plan, phase: FilePhase, work_root: str, token: str):
        self.plan, self.phase, self.work_root, self.token = plan, phase, work_root, token

    def setup(self):
        exit_without_collecting()  # a worker process: see pipeline/job.py
        self.claims = FileClaims(self.work_root, self.token, self.phase.name)

    def _run(self, file_index: int, path: str) -> None:
        work = Work(self.work_root)
        run_file_task(self.phase, file_index, path, work, barrier_result(self.plan, self.phase, work))

    def process(self, element, *after):
        file_index, paths = element  # from the grouping that spreads the files: (index, [path])
        if self.claims.claim(file_index):
            self._run(file_index, next(iter(paths)))
        yield DONE

    def finish_bundle(self):
        for file_index, path in self.claims.unclaimed():
            if self.claims.claim(file_index):
                self._run(file_index, path)


def run_missing_files(plan: Plan, phase: FilePhase, claims: FileClaims, work_root: str) -> None:
    """After a phase: any file without its completion marker is run here. Only a worker lost after
    claiming a file (a runner that retries its share elsewhere finds the file claimed) leaves one."""
    if claims.folder is None:
        return
    work = Work(work_root)
    done = set(work.done_names(phase.name))
    for i, path in enumerate(claims.paths()):
        if f"{i:06d}" not in done:
            run_file_task(phase, i, path, work, barrier_result(plan, phase, work))


# The element that says "this one is finished", keyed for the grouping that waits for all of them.
DONE = (0, None)


def _done(finished, label: str, then=lambda: None):
    """One element once every element of `finished` (all `DONE`) is there: a dependency for a side
    input and the next step. A grouping on one key, not CombineGlobally, whose result Beam's
    DaskRunner (2.77) delivers once per partition, nor CombinePerKey (three ParDos). The graph has as
    few ParDos as the plan needs: Beam inspects each one's DoFn several times as it builds and
    translates the graph, about 12 ms per ParDo per run, measured. `then()` runs once there; the
    element is `(0, then())`, keyed like `DONE` for a grouping after it."""
    return finished | f"Count_{label}" >> beam.GroupByKey() | f"Done_{label}" >> beam.Map(lambda _, then=then: (0, then()))


def _run_items(grouped, barrier, work_root: str):
    index, items = grouped  # from the grouping that spreads the items: (index, [item])
    for item in items:
        run_barrier_item(barrier, index, item, Work(work_root))
        yield DONE


def build_plan(p, plan: Plan, paths: list[str], work: Work):
    """The plan as a Beam graph. Only file indexes travel through Beam: documents, hashes, summaries and
    barrier results stay in the work folder (`pipeline/plan.py`), so what the runner does with elements
    (fusion, retries, duplicates) cannot change the output. A phase waits for the barrier before it
    through a side input; a barrier's steps are chained on the one element that says the step
    before it is complete, so a plan is a few fused stages (each stage costs every worker a round trip)."""
    # Keyed by their index and grouped: the runner spreads the groups over its workers (a Create
    # alone is one bundle, on one worker).
    files = p | "Files" >> beam.Create([(i, path) for i, path in enumerate(paths)], reshuffle=False) | "SpreadFiles" >> beam.GroupByKey()
    n_files = len(paths)
    token = uuid.uuid4().hex[:16]  # this run's claims (FileClaims); outputs do not depend on it
    FileClaims(work.root, token, "").write_paths(paths)
    after = []  # the side input the next phase waits for
    ready = None  # DONE once the step before is complete
    previous = None
    for step in plan.steps:
        if isinstance(step, FilePhase):
            done = files | f"Phase_{step.name}" >> beam.ParDo(RunFilePhase(plan, step, work.root, token), *after)
            sweep = functools.partial(run_missing_files, plan, step, FileClaims(work.root, token, step.name), work.root)
            ready, previous = _done(done, step.name, then=sweep), step
            after = [beam.pvalue.AsList(ready)]
            continue
        name = step.name
        # The work items, keyed by their index and grouped (spread over the workers like the files).
        items = (
            ready
            | f"Items_{name}" >> beam.FlatMap(lambda _, b=step, ph=previous: start_barrier(b, ph, n_files, Work(work.root)))
            | f"SpreadItems_{name}" >> beam.GroupByKey()
            | f"Run_{name}" >> beam.FlatMap(_run_items, step, work.root)
        )
        # `ready` joins the items so that a barrier without items is finished too.
        joined = (ready, items) | f"Join_{name}" >> beam.Flatten()
        ready = _done(joined, name, then=lambda b=step: finish_barrier(b, Work(work.root)))
        after = [beam.pvalue.AsList(ready)]


def local_runner(options: PipelineOptions):
    """The runner of a run that names none: Beam's FnApiRunner, which Beam 2.77's DirectRunner would
    pick for a batch pipeline like ours after first trying its PrismRunner (a Go binary it downloads
    from GitHub and starts as a job service: seconds on every run where it is reachable, a failed
    download where it is not). `--runner DirectRunner` still gets Beam's own choice. Its worker
    processes are forked from a copy of this process (`beam_jobs/worker_fork.py`)."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    from apache_beam.transforms import environments

    from beam_jobs import worker_fork

    class LocalRunner(fn_runner.FnApiRunner):
        # FnApiRunner.run_pipeline sets its worker environment from the options (for worker
        # processes: `python -m apache_beam.runners.worker.sdk_worker_main`); this runner keeps
        # every setting but that command, which it replaces with the forked workers' one.
        fork_command = None

        @property
        def _default_environment(self):
            return self._environment

        @_default_environment.setter
        def _default_environment(self, environment):
            if self.fork_command and isinstance(environment, environments.SubprocessSDKEnvironment):
                environment = environments.SubprocessSDKEnvironment.from_command_string(self.fork_command)
            self._environment = environment

    _prompt_state_sampler()
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    runner = LocalRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        runner.fork_command = worker_fork.worker_command()
    return runner


@functools.cache
def _prompt_state_sampler() -> None:
    """Beam's state sampler, a thread per bundle that samples which step is running for the step
    timings, sleeps up to 200 ms between samples, and the end of a bundle waits for its sleep
    (`statesampler_fast.pyx`, `StateSampler.stop` joins the thread): about 0.1 s at the end of every
    long bundle, and a phase ends with its last worker's bundle. With the local runner (in this
    process, or in the worker processes forked from it) it samples every 20 ms. Beam has no option
    for the period, so its class is replaced in this process (for any later pipeline here too)."""
    from apache_beam.runners.worker import statesampler

    class PromptStateSampler(statesampler.StateSampler):
        def __init__(self, prefix, counter_factory, sampling_period_ms=20):
            super().__init__(prefix, counter_factory, sampling_period_ms)

    statesampler.StateSampler = PromptStateSampler


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
