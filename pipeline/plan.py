"""How every file-based job is laid out and run: phases per input file, global barriers between them.

A job is a `Plan`: a list that alternates `FilePhase`s and `Barrier`s, starting and ending with a
file phase.

- A `FilePhase` runs once per input file and writes that file's intermediates (or, the last one, the
  file's output shard) through the run's work folder (`Work`). It returns a `FileResult`: the stage
  statistics of its steps, dead letters, and a small `summary` for the next barrier. A finished task
  leaves a completion marker holding its result, so a rerun after a kill skips it.
- A `Barrier` is a global point: it reduces the summaries of the phase before it (a commutative,
  associative reduction), optionally runs work items in parallel (e.g. one census per hash range,
  each with its own completion marker), and hands a small result to the next file phase.

Two executors run a plan: `run_local` here (one process: tests, benchmarks) and the Beam executor in
`beam_jobs/common.py` (any runner). Both call the same phase and barrier code, so they give the same
bytes. Nothing that grows with the input passes through an executor: documents and hashes stay in the
work folder; only results, summaries and small barrier results travel.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any, Iterable, Sequence

from pipeline.accounting import JobStats, StageStats, merge_stage_stats
from pipeline.models import ModelError
from pipeline.runs import InputError, _fs, atomic_write_bytes, read_bytes

import pyarrow.fs as pafs


@dataclasses.dataclass
class FileResult:
    phase: str
    file_index: int
    stats: list[dict]  # StageStats.to_dict() of each stage of the phase, in order
    dead: list[dict] = dataclasses.field(default_factory=list)
    summary: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "FileResult":
        return cls(**json.loads(data))


class Work:
    """The scratch folder of one run (`OUTPUT/.work/<fingerprint>`): intermediates and markers."""

    def __init__(self, root: str):
        self.root = root

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if "://" in self.root else "/".join([self.root.rstrip("/"), *parts])

    def _marker(self, kind: str, name: str) -> str:
        return self.path("done", kind, name + ".json")

    def load(self, kind: str, name: str) -> dict | None:
        fs, p = _fs(self._marker(kind, name))
        if fs.get_file_info(p).type != pafs.FileType.File:
            return None
        return json.loads(read_bytes(self._marker(kind, name)))

    def save(self, kind: str, name: str, value: dict) -> None:
        atomic_write_bytes(self._marker(kind, name), json.dumps(value, sort_keys=True, ensure_ascii=False).encode())

    def done_names(self, kind: str) -> list[str]:
        """The tasks of `kind` (a phase or barrier name) finished so far: the job's progress."""
        fs, p = _fs(self.path("done", kind))
        if fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        return sorted(i.base_name[: -len(".json")] for i in fs.get_file_info(pafs.FileSelector(p)) if i.base_name.endswith(".json"))


class FilePhase:
    """One per-file phase. Subclasses set `name` and `steps` (for the stage list) and implement `run`."""

    name: str = "phase"

    def __getstate__(self):
        # As a Step's: what a phase loads or opens (attributes starting with "_") stays on each worker.
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}

    def stages(self) -> list[str]:
        raise NotImplementedError

    def run(self, file_index: int, path: str, work: Work, barrier: Any) -> FileResult:
        raise NotImplementedError


class Barrier:
    """A global point between two file phases. The reduction defaults to summing numeric summaries."""

    name: str = "barrier"

    def create(self) -> dict:
        return {}

    def add(self, acc: dict, summary: dict) -> dict:
        for k, v in summary.items():
            acc[k] = acc.get(k, 0) + v
        return acc

    def merge(self, accs: Iterable[dict]) -> dict:
        out = self.create()
        for acc in accs:
            for k, v in acc.items():
                out[k] = out.get(k, 0) + v
        return out

    def items(self, reduced: dict) -> list:
        """Work items to run in parallel once every file of the phase before is done (default: none)."""
        return []

    def run_item(self, item, work: Work, reduced: dict) -> dict:
        raise NotImplementedError

    def result(self, reduced: dict, item_outputs: list[dict]) -> Any:
        """What the next file phase receives (small: cut-offs, a range count)."""
        return reduced

    def extra(self, result) -> dict:
        """What of the result goes into stats.json."""
        return {}


# A barrier's state lives in the work folder, not in the executor: the executor only orders the
# steps. So a runner that delivers an element twice (or re-runs a task) cannot change the result.

def start_barrier(barrier: Barrier, phase: FilePhase, files: int, work: Work) -> list:
    """Reduce the summaries of the phase before (from its markers); save and return the work items."""
    summaries = [work.load(phase.name, f"{i:06d}")["summary"] for i in range(files)]
    reduced = barrier.merge([barrier.add(barrier.create(), s) for s in summaries])
    items = barrier.items(reduced)
    work.save("reduced", barrier.name, {"reduced": reduced, "items": items})
    return list(enumerate(items))


def run_barrier_item(barrier: Barrier, index: int, item, work: Work) -> dict:
    name = f"{index:06d}"
    done = work.load(barrier.name, name)
    if done is not None:
        return done
    out = barrier.run_item(item, work, work.load("reduced", barrier.name)["reduced"])
    work.save(barrier.name, name, out)
    return out


def finish_barrier(barrier: Barrier, work: Work) -> None:
    state = work.load("reduced", barrier.name)
    outs = [work.load(barrier.name, f"{k:06d}") for k in range(len(state["items"]))]
    result = barrier.result(state["reduced"], outs)
    work.save("barrier", barrier.name, {"result": result, "extra": barrier.extra(result)})


def barrier_result(plan: "Plan", phase: FilePhase, work: Work):
    """The result of the barrier before `phase` (None for the first phase)."""
    before = plan.barrier_before(phase)
    return None if before is None else work.load("barrier", before.name)["result"]


def run_file_task(phase: FilePhase, file_index: int, path: str, work: Work, barrier: Any) -> FileResult:
    """A file phase on one file, skipped if its completion marker says it is done."""
    name = f"{file_index:06d}"
    done = work.load(phase.name, name)
    if done is not None:
        return FileResult(**done)
    try:
        result = phase.run(file_index, path, work, barrier)
    except (InputError, ModelError):
        raise
    except Exception as err:
        # Name the file: on a Beam runner the error reaches the user through a worker's traceback.
        raise TaskError(f"{path}: {type(err).__name__}: {err}".splitlines()[0][:500]) from err
    work.save(phase.name, name, dataclasses.asdict(result))
    return result


class TaskError(RuntimeError):
    """A file's task failed; the message names the file and the error."""


@dataclasses.dataclass
class Plan:
    job: str
    steps: list  # FilePhase, Barrier, FilePhase, ...

    def __post_init__(self):
        kinds = [isinstance(s, FilePhase) for s in self.steps]
        if not kinds or not kinds[0] or not kinds[-1] or any(a == b for a, b in zip(kinds, kinds[1:])):
            raise ValueError(f"{self.job}: a plan alternates file phases and barriers, file phases first and last")

    @property
    def file_phases(self) -> list[FilePhase]:
        return [s for s in self.steps if isinstance(s, FilePhase)]

    def barrier_before(self, phase: FilePhase) -> Barrier | None:
        i = self.steps.index(phase)
        return self.steps[i - 1] if i else None

    def barrier_names(self) -> list[str]:
        return [s.name for s in self.steps if isinstance(s, Barrier)]

    def stages(self) -> list[str]:
        return [name for phase in self.file_phases for name in phase.stages()]


def run_local(plan: Plan, paths: Sequence[str], work: Work) -> None:
    """Run a plan in this process."""
    previous = None
    for step in plan.steps:
        if isinstance(step, FilePhase):
            result = barrier_result(plan, step, work)
            for i, p in enumerate(paths):
                run_file_task(step, i, p, work, result)
            previous = step
        else:
            for k, item in start_barrier(step, previous, len(paths), work):
                run_barrier_item(step, k, item, work)
            finish_barrier(step, work)


def job_stats(plan: Plan, results: Iterable[FileResult], **extra) -> tuple[JobStats, list[dict], list[str]]:
    """Merge file results into the job's stats (every stage of the plan must be there), dead letters and
    the output files (the last phase's `summary["files"]`)."""
    results = list(results)
    last = plan.file_phases[-1].name
    merged = merge_stage_stats(StageStats.from_dict(s) for r in results for s in r.stats)
    dead = [d for r in results for d in r.dead]
    files = [f for r in results if r.phase == last for f in r.summary.get("files", [])]
    return JobStats.from_merged(plan.job, plan.stages(), merged, **extra), dead, sorted(files)
