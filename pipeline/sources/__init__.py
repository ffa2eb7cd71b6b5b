"""The six non-web LLaMA sources as plain steps, one module each, and an in-process executor.

A source module defines: SOURCE, STAGES (stage names in order, "read" first), GLOBAL (None, "lines",
"exact" or "minhash": the kind of global barrier between its `before` and `after` steps), a config
dataclass with `before()`, `after()`, `check_models()` and `batch_records`, `read(path, file_index,
stats, dead, config)` yielding `(batch_no, RecordBatch)`, `expand(patterns)` (optional; default:
files matching the globs) and `config_from_args(args)`.

`plan()` lays the source out as per-file phases and a barrier (`pipeline/plan.py`), which
`pipeline.plan.run_local` runs in this process and `beam_jobs/source.py` on Beam.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from pipeline.dedup import ApplyDedup, file_drops
from pipeline.phases import (CollectLineHashes, CollectSignatures, LineCensus, MinHashClusters, ReadInput, ReadWork, StepsPhase,
                             WriteShard, WriteWork, near_duplicates_of_file)
from pipeline.plan import Plan
from pipeline.runs import expand_inputs

NAMES = ("c4", "github", "wikipedia", "books", "arxiv", "stackexchange")


def get(name: str) -> ModuleType:
    if name not in NAMES:
        raise ValueError(f"unknown source {name!r}: one of {', '.join(NAMES)}")
    return importlib.import_module(f"pipeline.sources.{name}")


def expand(module: ModuleType, patterns) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return module.expand(patterns) if hasattr(module, "expand") else expand_inputs(patterns)


def config_dict(config) -> dict:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


CENSUS_RANGE_BYTES = 512 << 20


def plan(name: str, config, output: str) -> Plan:
    """The source's plan: one phase when it has no global barrier; else prepare (read + `before`
    steps, hashes or signatures to the work folder) -> barrier -> apply (the barrier's drop step +
    the rest of `after`) -> part-NNNNN.parquet."""
    module = get(name)
    read = ReadInput(lambda path, i, stats, dead: module.read(path, i, stats, dead, config))
    if module.GLOBAL is None:
        return Plan(name, [StepsPhase("read", read, lambda i, work, b: config.before() + config.after(), WriteShard(), output)])
    if module.GLOBAL in ("lines", "exact"):
        policy = getattr(config, "dedup_policy", "keep_first") if module.GLOBAL == "lines" else "keep_first"
        barrier, collect = LineCensus(policy, CENSUS_RANGE_BYTES), CollectLineHashes
        template = config.after()[0]  # the source's dedup step names its stage and drop reason
        named = {"name": template.name, "reason": template.reason}

        def drop_step(i, work, census):
            return ApplyDedup(file_drops(work, i, census["ranges"]), **named) if work is not None else ApplyDedup(**named)
    elif module.GLOBAL == "minhash":
        from pipeline.sources.books import DropNearDuplicates

        barrier, collect = MinHashClusters(config.bands, config.rows, config.threshold), CollectSignatures

        def drop_step(i, work, _):
            return DropNearDuplicates(near_duplicates_of_file(work, i) if work is not None else None)
    else:
        raise ValueError(f"{name}: unknown global barrier {module.GLOBAL!r}")
    prepare = StepsPhase("prepare", read, lambda i, work, b: config.before(), WriteWork("documents"), output, collect=collect)
    # `after()` lists the barrier's drop step first; the plan builds it from the barrier's result.
    apply = StepsPhase("apply", ReadWork("documents"), lambda i, work, b: [drop_step(i, work, b)] + config.after()[1:], WriteShard(), output)
    return Plan(name, [prepare, barrier, apply])
