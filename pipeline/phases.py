"""The building blocks of the jobs' plans (`pipeline/plan.py`): a file phase that runs steps from a
reader to a writer, what it collects for the next barrier, and the barriers themselves.

    StepsPhase(read -> steps -> write [+ collect])
        read:    the job's input file (`read` stage) or the file's intermediate of an earlier phase
        write:   the file's intermediate in the work folder, or its output shard `part-NNNNN.parquet`
        collect: line hashes (the census), MinHash signatures, a perplexity sample
    LineCensus, MinHashClusters, PerplexityCutoffs: the barriers.
"""
from __future__ import annotations

import io
import posixpath
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xxhash

from pipeline import dedup
from pipeline.accounting import StageStats
from pipeline.pairs import read_pairs, sort_pairs, write_pairs
from pipeline.plan import Barrier, FilePhase, FileResult, Work
from pipeline.runs import _fs, atomic_output, atomic_write_bytes, read_bytes, shard_name, write_parquet
from pipeline.schema import ORD_FILE_SHIFT, to_document_table


# --- readers -----------------------------------------------------------------------------------------

class ReadInput:
    """The job's own input file through a source reader `read(path, file_index, stats, dead)`."""

    stages = ["read"]

    def __init__(self, read: Callable):
        self.read = read

    def open(self, file_index: int, path: str, work: Work, dead: list) -> tuple[StageStats, Iterator[pa.RecordBatch]]:
        stats = StageStats("read")
        return stats, (batch for _, batch in self.read(path, file_index, stats, dead))


class ReadWork:
    """A file's intermediate written by an earlier phase (`WriteWork`), a row group at a time."""

    stages: list[str] = []

    def __init__(self, folder: str):
        self.folder = folder

    def open(self, file_index, path, work, dead):
        return None, _read_row_groups(work.path(self.folder, f"{file_index:06d}.parquet"))


def _read_row_groups(path: str) -> Iterator[pa.RecordBatch]:
    fs, p = _fs(path)
    if fs.get_file_info(p).type != pafs.FileType.File:
        return  # the phase that wrote it had no documents left for this file
    with fs.open_input_file(p) as f:
        parquet = pq.ParquetFile(f)
        for g in range(parquet.num_row_groups):
            yield from parquet.read_row_group(g).to_batches()


# --- writers -----------------------------------------------------------------------------------------

class WriteWork:
    """Streams the file's surviving batches to `work/<folder>/NNNNNN.parquet`, a row group per batch."""

    def __init__(self, folder: str):
        self.folder = folder

    def open(self, file_index: int, work: Work, output: str) -> "_WorkSink":
        return _WorkSink(work.path(self.folder, f"{file_index:06d}.parquet"))


class _WorkSink:
    def __init__(self, path: str):
        self.path, self.ctx, self.writer = path, None, None

    def add(self, batch: pa.RecordBatch) -> None:
        if self.writer is None:
            self.ctx = atomic_output(self.path)
            self.writer = pq.ParquetWriter(self.ctx.__enter__(), batch.schema, compression="lz4")
        self.writer.write_batch(batch.cast(self.writer.schema) if batch.schema != self.writer.schema else batch)

    def close(self) -> dict:
        if self.writer is not None:
            self.writer.close()
            self.ctx.__exit__(None, None, None)
        return {}


class WriteShard:
    """The file's output shard `part-NNNNN.parquet` (document schema, rows in `_ord` order); a file
    with no document left writes none. The shard is built in memory: one input file's output."""

    def open(self, file_index, work, output):
        return _ShardSink(output, file_index)


class _ShardSink:
    def __init__(self, output: str, file_index: int):
        self.output, self.file_index, self.batches = output, file_index, []

    def add(self, batch):
        self.batches.append(batch)

    def close(self) -> dict:
        if not self.batches:
            return {"files": []}
        table = pa.Table.from_batches(self.batches).sort_by("_ord").combine_chunks()
        name = shard_name(self.file_index)
        write_parquet(to_document_table(table), posixpath.join(self.output, name) if "://" in self.output else f"{self.output}/{name}")
        return {"files": [name]}


# --- what a phase collects for the next barrier --------------------------------------------------------

class CollectLineHashes:
    """Every surviving line's (hash, document order), written sorted by hash for the census `census`."""

    def __init__(self, census: str = "census"):
        self.census = census
        self.hashes, self.orders = [], []

    def add(self, batch):
        h, o = dedup.census_input(batch)
        self.hashes.append(h)
        self.orders.append(o)

    def close(self, file_index: int, work: Work) -> dict:
        h = np.concatenate(self.hashes) if self.hashes else np.empty(0, np.uint64)
        o = np.concatenate(self.orders) if self.orders else np.empty(0, np.uint64)
        dedup.write_file_hashes(work, file_index, h, o, self.census)
        return {"lines": int(len(h)), "hashed_files": 1}


class CollectSignatures:
    """Each document's MinHash signature (`_minhash`), for the near-duplicate clusters."""

    def __init__(self):
        self.orders, self.signatures = [], []

    def add(self, batch):
        from pipeline.sources.books import signatures_of

        for order, sig in signatures_of(batch):
            self.orders.append(order)
            self.signatures.append(sig)

    def close(self, file_index, work):
        buf = io.BytesIO()
        sigs = np.stack(self.signatures) if self.signatures else np.empty((0, 0), np.uint64)
        np.savez(buf, orders=np.array(self.orders, np.uint64), signatures=sigs)
        atomic_write_bytes(work.path("signatures", f"{file_index:06d}.npz"), buf.getvalue())
        return {"documents": len(self.orders), "hashed_files": 1}


class CollectPerplexitySample:
    """A bounded, deterministic sample of (language, perplexity): per language the `size` documents
    with the smallest hash of their id (a bottom-k sample: the same whatever the order or the split;
    every document while a language has fewer than `size`)."""

    def __init__(self, size: int):
        self.size, self.rows = size, {}

    def add(self, batch):
        ppl = batch.column("perplexity").to_numpy(zero_copy_only=False)
        langs = batch.column("language").to_pylist()
        for doc_id, lang, value in zip(batch.column("id").to_pylist(), langs, ppl):
            if not np.isnan(value):
                self.rows.setdefault(lang, []).append((xxhash.xxh3_64_intdigest(doc_id.encode()), float(value)))

    def close(self, file_index, work):
        return {"sample": {lang: bottom_k(rows, self.size) for lang, rows in self.rows.items()}}


def bottom_k(rows: list, size: int) -> list:
    return sorted(map(tuple, rows))[:size]


# --- the file phase -----------------------------------------------------------------------------------

class StepsPhase(FilePhase):
    """read -> steps -> write, per input file. `make_steps(file_index, work, barrier)` builds the steps
    from the barrier's result (e.g. a file's drop list, the perplexity cut-offs)."""

    def __init__(self, name: str, read, make_steps: Callable, write, output: str, collect: Callable | None = None):
        self.name, self.read, self.make_steps, self.write, self.output, self.collect = name, read, make_steps, write, output, collect

    def stages(self) -> list[str]:
        return list(self.read.stages) + [s.name for s in self.make_steps(None, None, None)]

    def run(self, file_index: int, path: str, work: Work, barrier: Any) -> FileResult:
        steps = self.make_steps(file_index, work, barrier)
        stats = [StageStats(s.name) for s in steps]
        dead: list[dict] = []
        read_stats, batches = self.read.open(file_index, path, work, dead)
        sink = self.write.open(file_index, work, self.output)
        collector = self.collect() if self.collect else None
        for batch in batches:
            measured = None
            for step, stage in zip(steps, stats):
                batch, s = step(batch, measured)
                stage.merge(s)
                measured = (s.chars_out, s.lines_out)
                if not batch.num_rows:
                    break  # nothing left for the later steps (an empty batch need not carry their columns)
            if batch.num_rows:
                sink.add(batch)
                if collector is not None:
                    collector.add(batch)
        summary = sink.close()
        if collector is not None:
            summary.update(collector.close(file_index, work))
        all_stats = ([read_stats] if read_stats is not None else []) + stats
        return FileResult(self.name, file_index, [s.to_dict() for s in all_stats], dead, summary)


# --- barriers -----------------------------------------------------------------------------------------

class LineCensus(Barrier):
    """The global census of line (or content) hashes, one work item per hash range (pipeline/dedup.py).
    The next phase receives the range count and reads its own drop list (`file_drops`)."""

    def __init__(self, policy: str, range_budget_bytes: int, group_files: int = 0, min_ranges: int = 1, name: str = "census"):
        if policy not in dedup.POLICIES:
            raise ValueError(f"unknown dedup policy {policy!r}: one of {', '.join(dedup.POLICIES)}")
        self.policy, self.range_budget_bytes, self.group_files, self.min_ranges = policy, range_budget_bytes, group_files, min_ranges
        self.name = name

    def items(self, reduced):
        ranges = dedup.range_count(reduced.get("lines", 0), self.range_budget_bytes, self.min_ranges)
        return [(r, ranges, reduced.get("hashed_files", 0)) for r in range(ranges)]

    def run_item(self, item, work, reduced):
        r, ranges, files = item
        return dedup.census_range(work, r, ranges, files, self.policy, self.group_files, self.name)

    def result(self, reduced, item_outputs):
        return {"ranges": len(item_outputs), "lines": reduced.get("lines", 0),
                "range_bytes_max": max((o["bytes"] for o in item_outputs), default=0),
                "dropped_lines": sum(o["dropped_lines"] for o in item_outputs)}

    def extra(self, result):
        return {self.name: result}


class MinHashClusters(Barrier):
    """Near-duplicate clusters over every document's MinHash signature (books). One work item: the
    signatures of the whole input (512 bytes a book); it writes the `_ord`s to drop."""

    name = "minhash"

    def __init__(self, bands: int, rows: int, threshold: float):
        self.bands, self.rows, self.threshold = bands, rows, threshold

    def items(self, reduced):
        return [reduced.get("hashed_files", 0)]

    def run_item(self, files, work, reduced):
        from collections import defaultdict

        from pipeline.sources.books import band_keys, duplicates_to_drop, verified_pairs

        buckets = defaultdict(list)
        for i in range(files):
            data = np.load(io.BytesIO(read_bytes(work.path("signatures", f"{i:06d}.npz"))))
            for order, sig in zip(data["orders"], data["signatures"]):
                for key in band_keys(sig, self.bands, self.rows):
                    buckets[key].append((int(order), sig))
        pairs = set()
        for members in buckets.values():
            if len(members) > 1:
                pairs.update(verified_pairs(members, self.threshold))
        drop = duplicates_to_drop(sorted(pairs))
        write_pairs(work.path("near_duplicates.pairs"), *sort_pairs(drop, np.zeros(len(drop), np.uint64)))
        return {"near_duplicates": int(len(drop))}

    def result(self, reduced, item_outputs):
        return {}


def near_duplicates_of_file(work: Work, file_index: int) -> np.ndarray:
    orders, _ = read_pairs(work.path("near_duplicates.pairs"), file_index << ORD_FILE_SHIFT, (file_index + 1) << ORD_FILE_SHIFT)
    return orders


class PerplexityCutoffs(Barrier):
    """Per-language cut-offs from the merged bounded samples (`CollectPerplexitySample`)."""

    name = "cutoffs"

    def __init__(self, size: int):
        self.size = size

    def add(self, acc, summary):
        return self.merge([acc, summary.get("sample", {})])

    def merge(self, accs):
        out: dict[str, list] = {}
        for acc in accs:
            for lang, rows in acc.items():
                out.setdefault(lang, []).extend(tuple(r) for r in rows)
        return {lang: bottom_k(rows, self.size) for lang, rows in sorted(out.items())}

    def result(self, reduced, item_outputs):
        from pipeline.perplexity import compute_cutoffs

        return compute_cutoffs({lang: np.array([v for _, v in rows], np.float32) for lang, rows in reduced.items()})

    def extra(self, result):
        return {"cutoffs": result}
