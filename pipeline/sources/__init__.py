"""The six non-web LLaMA sources as plain steps, one module each, and an in-process executor.

A source module defines: SOURCE, STAGES (stage names in order, "read" first), GLOBAL (None, "lines",
"exact" or "minhash": the kind of global barrier between its `before` and `after` steps), a config
dataclass with `before()`, `after()`, `check_models()` and `batch_records`, `read(path, file_index,
stats, dead, config)` yielding `(batch_no, RecordBatch)`, `expand(patterns)` (optional; default:
files matching the globs) and `config_from_args(args)`.

`beam_jobs/source.py` runs the same steps on Beam; `run_local` here runs them in this process
(tests, benchmarks) with the same global logic, so both give the same documents.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

import pyarrow as pa

from pipeline.accounting import JobStats, StageStats, apply_steps, merge_stage_stats
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


def run_local(name: str, paths: list[str], config) -> tuple[pa.Table | None, JobStats, list[dict]]:
    """Run source `name` over `paths` in this process: (documents sorted by _ord, stats, dead letters)."""
    from pipeline.dedup import duplicate_table

    module = get(name)
    stats: list[StageStats] = []
    dead: list[dict] = []

    def apply(steps, batch):
        return apply_steps(steps, batch, stats)

    before = []
    for file_index, path in enumerate(paths):
        read = StageStats("read")
        for _, batch in module.read(path, file_index, read, dead, config):
            before.append(apply(config.before(), batch))
        stats.append(read)
    after = config.after()
    if module.GLOBAL in ("lines", "exact"):
        after[0].table = duplicate_table(before, config.dedup_range_bits)
    elif module.GLOBAL == "minhash":
        from collections import defaultdict

        from pipeline.sources.books import band_keys, duplicates_to_drop, signatures_of, verified_pairs

        buckets = defaultdict(list)
        for batch in before:
            for order, sig in signatures_of(batch):
                for key in band_keys(sig, config.bands, config.rows):
                    buckets[key].append((order, sig))
        pairs = set()
        for members in buckets.values():
            if len(members) > 1:
                pairs.update(verified_pairs(members, config.threshold))
        after[0].drop = duplicates_to_drop(sorted(pairs))
    kept = [apply(after, b) for b in before] if after else before
    kept = [b for b in kept if b.num_rows]
    job = JobStats.from_merged(name, module.STAGES, merge_stage_stats(stats))
    table = pa.Table.from_batches(kept).sort_by("_ord") if kept else None
    return table, job, dead
