"""The one job convention: every command that writes a folder runs through `run_job`.

    inputs + config -> fingerprint -> (complete with this fingerprint? skip)
        -> the work folder OUTPUT/.work/<fingerprint>/ (intermediates and completion markers: a rerun
           after a kill keeps every task that finished) -> the job's body
        -> dead letters, stale files removed, stats.json last (`pipeline.runs.finalize`)
        -> the work folder removed.

A plan job (`pipeline/plan.py`) hands its plan and an executor (in-process or Beam); its results are
read back from the completion markers, so the close is the same whatever ran the tasks. A job that is
not a plan (training a model) hands a body that returns its JobStats and files.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import sys
import threading
import time
from typing import Callable, Sequence

import pyarrow.fs as pafs

from pipeline.accounting import JobStats
from pipeline.plan import FileResult, Plan, Work, job_stats, run_local
from pipeline.runs import STATS_FILE, _fs, finalize, input_fingerprint, is_complete, load_stats

WORK_DIR = ".work"


@functools.cache  # registered once per process
def exit_without_collecting() -> None:
    """At interpreter exit, leave what is still alive out of the cyclic garbage collector.

    Python's shutdown runs full collections while it tears the modules down; with Beam imported that
    walks some 100k objects (protobuf descriptors, type hints, gRPC) and took 0.3 s of every process's
    exit here, the driver's and each worker's, and Beam closes its worker processes one after the
    other. `gc.freeze()` at exit skips that walk; nothing changes before exit, on any runner (an
    atexit hook only: a long-lived worker keeps collecting while it works)."""
    atexit.register(gc.freeze)


def work_for(output: str, fingerprint: str) -> Work:
    base = f"{output.rstrip('/')}/{WORK_DIR}"
    _remove_other_work(base, fingerprint[:16])
    return Work(f"{base}/{fingerprint[:16]}")


def _remove_other_work(base: str, keep: str) -> None:
    """A work folder of another fingerprint (other inputs or config) can never be resumed: remove it."""
    fs, p = _fs(base)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return
    for info in fs.get_file_info(pafs.FileSelector(p)):
        if info.base_name != keep:
            fs.delete_dir(info.path) if info.type == pafs.FileType.Directory else fs.delete_file(info.path)


def _remove(path: str) -> None:
    fs, p = _fs(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        fs.delete_dir(p)


def run_plan(plan: Plan, paths: Sequence[str], output: str, config: dict, *, force: bool = False,
             executor: Callable | None = None, progress: bool = True, extra: dict | None = None,
             close: Callable | None = None, fingerprint_inputs: Sequence[str] | None = None) -> dict | None:
    """Run a plan job; returns its stats, or None when OUTPUT already holds this run (same inputs and config).
    `executor(plan, paths, work)` runs every task (default: in this process); `close(results)` writes
    what the job writes besides shards (a manifest) and returns (stats extra, file names).
    `fingerprint_inputs`: the files the run depends on, when the tasks are not files (default: paths)."""
    fingerprint = input_fingerprint(list(fingerprint_inputs or paths), {"job": plan.job, **config})
    if not force and is_complete(output, fingerprint):
        return None
    work = work_for(output, fingerprint)
    with Progress(plan, work, len(paths), enabled=progress):
        (executor or run_local)(plan, list(paths), work)
    results = [FileResult(**work.load(phase.name, f"{i:06d}")) for phase in plan.file_phases for i in range(len(paths))]
    more = {k: v for name in plan.barrier_names() for k, v in work.load("barrier", name)["extra"].items()}
    if close is not None:
        more_extra, more_files = close(results)
        more.update(more_extra)
    stats, dead, files = job_stats(plan, results, fingerprint=fingerprint, config=config, **(extra or {}), **more)
    if close is not None:
        files = sorted(set(files) | set(more_files))
    finalize(output, stats, files, dead)
    _remove(work.root.rsplit("/", 1)[0])
    return stats.to_dict()


def run_job(name: str, paths: Sequence[str], output: str, config: dict, body: Callable[[Work], tuple[JobStats, list[str], list[dict]]],
            *, force: bool = False, stats_file: str = STATS_FILE) -> dict | None:
    """A job that is not a plan: `body(work)` does the work (writing into OUTPUT through atomic writes)
    and returns (stats, files written, dead letters). `stats_file`: for a folder that several runs
    share (one LM folder for every language)."""
    fingerprint = input_fingerprint(list(paths), {"job": name, **config})
    if not force and is_complete(output, fingerprint, stats_file):
        return None
    work = work_for(output, fingerprint)
    stats, files, dead = body(work)
    stats.extra.update(fingerprint=fingerprint, config=config)
    finalize(output, stats, files, dead, stats_file)
    _remove(work.root.rsplit("/", 1)[0])
    return load_stats(output, stats_file)


class Progress:
    """Prints the job's progress from its completion markers: file tasks done / total, documents/s
    (documents read by the first phase), time left. A rich bar on a terminal, a plain line every few
    seconds otherwise; nothing for a job that ends within a few seconds."""

    def __init__(self, plan: Plan, work: Work, files: int, enabled: bool = True, every: float = 5.0, after: float = 10.0):
        self.plan, self.work, self.files, self.enabled, self.every, self.after = plan, work, files, enabled, every, after
        self.total = files * len(plan.file_phases)
        self._stop = threading.Event()
        self._thread = None
        self._seen: set[str] = set()
        self._docs = 0

    def __enter__(self):
        if self.enabled and self.total:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def poll(self) -> int:
        """File tasks done; counts the documents the first phase has read."""
        first = self.plan.file_phases[0].name
        for name in self.work.done_names(first):
            if name not in self._seen:
                self._seen.add(name)
                with contextlib.suppress(Exception):
                    self._docs += self.work.load(first, name)["stats"][0]["docs_in"]
        return sum(len(self.work.done_names(p.name)) for p in self.plan.file_phases)

    def _loop(self):
        start = time.time()
        if self._stop.wait(self.after):
            return
        bar = task = None
        # The CLI notes whether standard error was a terminal before it filtered it through a pipe.
        if os.environ.get("CORPUSMILL_TTY", "1" if sys.stderr.isatty() else "0") == "1":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            bar = Bar(TextColumn(self.plan.job), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                      TimeRemainingColumn(), transient=True, console=Console(file=sys.stderr, force_terminal=True))
            task = bar.add_task(self.plan.job, total=self.total, rate="")
            bar.start()
        try:
            while True:
                with contextlib.suppress(Exception):  # progress never fails a job
                    done = min(self.poll(), self.total)
                    elapsed = max(time.time() - start + self.after, 1e-9)
                    rate = self._docs / elapsed
                    left = f"~{(self.total - done) * elapsed / done:.0f} s left" if done else "time left unknown yet"
                    if bar is not None:
                        bar.update(task, completed=done, rate=f"{rate:,.0f} docs/s")
                    elif done < self.total:  # the closing step follows the last task: nothing to say
                        print(f"{self.plan.job}: {done}/{self.total} file tasks, {rate:,.0f} documents/s, {left}",
                              file=sys.stderr, flush=True)
                if self._stop.wait(0.5 if bar is not None else self.every):
                    return
        finally:
            if bar is not None:
                bar.stop()
