"""The local runner's additions to Beam's FnApiRunner: file claims between workers (a worker that
finishes its share takes files nobody has started), worker processes forked from the driver, and a
state sampler that does not hold up the end of each bundle."""
import os
import subprocess
import sys

from beam_jobs.common import DONE, FileClaims, RunFilePhase, run_missing_files
from pipeline.plan import FilePhase, FileResult, Plan, Work

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CountingPhase(FilePhase):
    """A phase that records which process ran which file (one line per run in `runs.log`)."""

    name = "count"

    def __init__(self, log: str):
        self.log = log

    def stages(self):
        return ["count"]

    def run(self, file_index, path, work, barrier):
        with open(self.log, "a") as f:
            f.write(f"{file_index}\n")
        return FileResult(self.name, file_index, stats=[], summary={"bytes": os.path.getsize(path)})


def _setup(tmp_path, files=6):
    paths = []
    for i in range(files):
        p = tmp_path / f"in{i}.txt"
        p.write_text("x" * (i + 1))
        paths.append(str(p))
    work = Work(str(tmp_path / "work"))
    phase = CountingPhase(str(tmp_path / "runs.log"))
    plan = Plan("count", [phase])
    FileClaims(work.root, "run1", "count").write_paths(paths)
    return paths, work, phase, plan


def _runs(tmp_path):
    return [int(line) for line in (tmp_path / "runs.log").read_text().split()]


def test_claims_are_exclusive_and_per_run(tmp_path):
    _, work, _, _ = _setup(tmp_path)
    a, b = FileClaims(work.root, "run1", "count"), FileClaims(work.root, "run1", "count")
    assert a.claim(3) and not b.claim(3) and not a.claim(3)
    # A rerun (a new token) is not held up by the claims of a killed run.
    assert FileClaims(work.root, "run2", "count").claim(3)
    assert [i for i, _ in b.unclaimed()] == [5, 4, 2, 1, 0]  # last first: the end of the others' shares


def test_a_worker_that_finishes_its_share_takes_the_files_nobody_started(tmp_path):
    paths, work, phase, plan = _setup(tmp_path)
    fast, slow = RunFilePhase(plan, phase, work.root, "run1"), RunFilePhase(plan, phase, work.root, "run1")
    fast.setup(), slow.setup()
    # The runner split the six files: 0, 2, 4 to the fast worker, 1, 3, 5 to the slow one, which has
    # only started file 1 when the fast one is through its share. An element is a file's index with
    # its path, as the grouping that spreads them delivers it.
    assert list(slow.process((1, [paths[1]]))) == [DONE]
    for i in (0, 2, 4):
        assert list(fast.process((i, [paths[i]]))) == [DONE]
    fast.finish_bundle()
    assert sorted(_runs(tmp_path)) == [0, 1, 2, 3, 4, 5]
    assert _runs(tmp_path)[-2:] == [5, 3]  # taken from the end of the slow worker's share
    for i in (3, 5):  # the slow worker's elements of files already taken: counted, not run again
        assert list(slow.process((i, [paths[i]]))) == [DONE]
    slow.finish_bundle()
    assert sorted(_runs(tmp_path)) == [0, 1, 2, 3, 4, 5]
    assert set(work.done_names("count")) == {f"{i:06d}" for i in range(6)}


def test_a_file_claimed_by_a_lost_worker_is_run_after_the_phase(tmp_path):
    paths, work, phase, plan = _setup(tmp_path)
    claims = FileClaims(work.root, "run1", "count")
    worker = RunFilePhase(plan, phase, work.root, "run1")
    worker.setup()
    assert claims.claim(2)  # a worker claimed file 2 and was lost before it finished
    for i in range(6):
        list(worker.process((i, [paths[i]])))
    worker.finish_bundle()
    assert 2 not in _runs(tmp_path)
    run_missing_files(plan, phase, claims, work.root)
    assert sorted(_runs(tmp_path)) == [0, 1, 2, 3, 4, 5]
    run_missing_files(plan, phase, claims, work.root)  # nothing left: nothing runs twice
    assert sorted(_runs(tmp_path)) == [0, 1, 2, 3, 4, 5]


def test_claims_are_off_on_an_object_store():
    claims = FileClaims("gs://bucket/out/.work/abc", "run1", "count")
    assert claims.claim(0) and claims.claim(0) and claims.unclaimed() == []


def _unix_sockets() -> str:
    with open("/proc/net/unix") as f:
        return f.read()


def test_two_worker_run_uses_forked_workers_and_leaves_no_process(tmp_path):
    """A 2-worker run of a job: its workers come from the driver's worker server (the runner's worker
    command is the fork client), and once the job has returned neither the server nor a worker is
    left (the server's abstract socket is gone)."""
    sample = os.path.join(REPO, "data", "sample", "c4")
    code = (
        "import sys, apache_beam.runners.portability.fn_api_runner.worker_handlers as wh\n"
        "seen = []\n"
        "start = wh.SubprocessSdkWorkerHandler.start_worker\n"
        "def spy(self): seen.append(self._worker_command_line.decode()); start(self)\n"
        "wh.SubprocessSdkWorkerHandler.start_worker = spy\n"
        "from beam_jobs.cli import main\n"
        f"rc = main(['source', 'c4', '--input', {sample!r} + '/*.json.gz', '--output', {str(tmp_path / 'out')!r},"
        " '--direct_num_workers=2', '--force'])\n"
        "print('WORKERS', seen, flush=True)\n"
        "import os; print('PID', os.getpid(), flush=True)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    workers = next(line for line in proc.stdout.splitlines() if line.startswith("WORKERS"))
    assert workers.count("worker_fork_client.py") == 2, workers
    pid = next(line for line in proc.stdout.splitlines() if line.startswith("PID")).split()[1]
    assert f"@corpusmill-workers-{pid}-" not in _unix_sockets()


def test_the_local_runner_samples_every_20_ms_in_process_and_in_forked_workers(tmp_path):
    # Beam's sampler thread sleeps 200 ms between samples and the end of each bundle waits for it
    # (`_prompt_state_sampler`); the running bundle's own sampler is what a DoFn reads here, so the
    # test fails if Beam stops creating its sampler through `statesampler.StateSampler`.
    code = f"""
import os, apache_beam as beam
from apache_beam.runners.worker import statesampler
from beam_jobs.common import beam_pipeline

class Period(beam.DoFn):
    def process(self, i):
        with open(os.path.join({str(tmp_path)!r}, f"{{os.getpid()}}-{{i}}"), "w") as f:
            f.write(str(statesampler.get_current_tracker().sampling_period_ms))
        yield i

for workers in (1, 2):
    with beam_pipeline([f"--direct_num_workers={{workers}}"]) as p:
        p | beam.Create([(k, k) for k in range(4)]) | beam.GroupByKey() | beam.ParDo(Period())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    periods = {name: open(tmp_path / name).read() for name in os.listdir(tmp_path)}
    assert len(periods) == 8 and set(periods.values()) == {"20"}, periods
    assert len({name.split("-")[0] for name in periods}) >= 2  # in the driver and in worker processes
