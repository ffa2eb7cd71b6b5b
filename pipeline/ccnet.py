"""The CCNet web pipeline as a plan of per-file phases and global barriers (`pipeline/plan.py`).

    prepare (per file):  read (WARC/WET/ARC) -> extract -> min_length -> dedup_in_document
                         -> documents + line hashes in the work folder
                         (with exact_dedup: first a content-hash census, keep_first, as RedPajama v1)
    census (barrier):    line census per hash range -> each range's drop list
    score (per file):    dedup (the file's own drops) -> language -> perplexity_score
                         -> documents + a bounded perplexity sample
    cutoffs (barrier):   per-language 30th/60th percentiles of the merged sample
    finish (per file):   perplexity (bucket filter) -> quality -> part-NNNNN.parquet

With fixed cut-offs (a file) `score` runs the buckets and quality itself and writes the shard.
`pipeline.plan.run_local` runs the plan in one process; `beam_jobs/common.py` on any Beam runner.
"""
from __future__ import annotations

import dataclasses
import os

import pyarrow.compute as pc

from pipeline.dedup import ApplyDedup, HashLines, file_drops
from pipeline.sources.common import HashContent
from pipeline.extract import ExtractText
from pipeline.langid import IdentifyLanguage
from pipeline.models import default_lid_path, default_lm_dir, default_quality_model_path, load_fasttext
from pipeline.perplexity import BucketByPerplexity, ScorePerplexity, load_cutoffs
from pipeline.phases import (CollectLineHashes, CollectPerplexitySample, LineCensus, PerplexityCutoffs, ReadInput, ReadWork,
                             StepsPhase, WriteShard, WriteWork)
from pipeline.plan import Plan
from pipeline.quality_filter import DEFAULT_THRESHOLD, ScoreQuality
from pipeline.step import Outcome, Step
from pipeline.warc import iter_raw_batches

@dataclasses.dataclass
class CCNetConfig:
    extractor: str = "resiliparse"
    min_length: int = 300  # cc_net mine.py:84 / process_wet_file.py:134: shorter documents are dropped
    exact_dedup: bool = False  # RedPajama v1's document dedup (dedup_phase2), before the line census
    dedup_policy: str = "remove_all"
    dedup_group_files: int = 0  # 0: global; N: dedup within groups of N consecutive inputs (cc_net hash_in_mem)
    census_range_mb: int = 512  # memory budget of one hash range of the census
    languages: tuple[str, ...] | None = ("en",)
    lid_threshold: float = 0.5
    lid_model: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    lm_dir: str = dataclasses.field(default_factory=lambda: os.fspath(default_lm_dir()))
    cutoffs: str | None = None  # a cut-off file; None: <lm_dir>/cutoffs.json if present, else from this run
    cutoff_sample: int = 100_000  # documents per language the cut-offs are computed from (all below that)
    keep_buckets: tuple[str, ...] = ("head", "middle")
    quality_model: str | None = dataclasses.field(default_factory=lambda: _default_quality_model())
    quality_threshold: float = DEFAULT_THRESHOLD
    batch_records: int = 64

    def check_models(self) -> None:
        """Fail before any work if a model is missing, with how to get it."""
        load_fasttext(self.lid_model)
        ScorePerplexity(self.lm_dir, self.lm_languages).check()
        if self.quality_model is not None:
            ScoreQuality(self.quality_model).load()
        if self.cutoffs is not None and not os.path.isfile(self.cutoffs):
            raise FileNotFoundError(f"perplexity cut-off file {self.cutoffs!r} not found (see `corpusmill lm-cutoffs`)")

    @property
    def lm_languages(self) -> tuple[str, ...]:
        return tuple(self.languages) if self.languages else ("en",)

    def fixed_cutoffs(self) -> dict | None:
        path = self.cutoffs or os.path.join(self.lm_dir, "cutoffs.json")
        if self.cutoffs is None and not os.path.isfile(path):
            return None
        return load_cutoffs(path)

    def plan(self, output: str) -> Plan:
        fixed = self.fixed_cutoffs()
        census = LineCensus(self.dedup_policy, self.census_range_mb << 20, self.dedup_group_files)
        extract = [ExtractText(self.extractor), MinLength(self.min_length)]
        if self.exact_dedup:
            # One copy of each page (the first in input order) before the line census, so that a page
            # crawled twice keeps its lines (RedPajama v1 data_prep/cc/dedup/dedup_phase2.py).
            documents = LineCensus("keep_first", self.census_range_mb << 20, name="documents")
            head = [
                StepsPhase("prepare", ReadInput(self._read), lambda i, work, b: extract + [HashContent()], WriteWork("extracted"), output,
                           collect=lambda: CollectLineHashes("documents")),
                documents,
                StepsPhase("hash_lines", ReadWork("extracted"), lambda i, work, b: [self._exact_dedup(i, work, b), HashLines()],
                           WriteWork("documents"), output, collect=CollectLineHashes),
            ]
        else:
            head = [StepsPhase("prepare", ReadInput(self._read), lambda i, work, b: extract + [HashLines()], WriteWork("documents"), output,
                               collect=CollectLineHashes)]

        def score_steps(i, work, census_result):
            drops = file_drops(work, i, census_result["ranges"]) if work is not None else ()
            steps = [
                ApplyDedup(drops) if work is not None else ApplyDedup(),
                IdentifyLanguage(self.lid_model, self.languages, self.lid_threshold),
                ScorePerplexity(self.lm_dir, self.lm_languages),
            ]
            return steps + (self._finish_steps(fixed) if fixed is not None else [])

        if fixed is not None:
            return Plan("ccnet", head + [census, StepsPhase("score", ReadWork("documents"), score_steps, WriteShard(), output)])
        score = StepsPhase("score", ReadWork("documents"), score_steps, WriteWork("scored"), output,
                           collect=lambda: CollectPerplexitySample(self.cutoff_sample))
        finish = StepsPhase("finish", ReadWork("scored"), lambda i, work, cutoffs: self._finish_steps(cutoffs), WriteShard(), output)
        return Plan("ccnet", head + [census, score, PerplexityCutoffs(self.cutoff_sample), finish])

    @staticmethod
    def _exact_dedup(i, work, census_result):
        step = dict(name="exact_dedup", reason="duplicate_document")
        return ApplyDedup(file_drops(work, i, census_result["ranges"], "documents"), **step) if work is not None else ApplyDedup(**step)

    def _read(self, path, file_index, stats, dead):
        return iter_raw_batches(path, file_index, stats, dead, self.batch_records)

    def _finish_steps(self, cutoffs) -> list:
        return [BucketByPerplexity(cutoffs, self.keep_buckets), ScoreQuality(self.quality_model, self.quality_threshold)]


def _default_quality_model() -> str | None:
    """models/quality/wiki_vs_cc.bin if it exists; else no quality filter (the step notes it)."""
    path = default_quality_model_path()
    return os.fspath(path) if path.is_file() else None


@dataclasses.dataclass
class MinLength(Step):
    """Drops documents shorter than `min_chars` characters after extraction, as cc_net drops WET
    documents under `min_len` (cc_net/process_wet_file.py:134, default 300 in mine.py:84)."""

    min_chars: int = 300
    name: str = "min_length"

    def process(self, batch, notes):
        lengths = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
        return Outcome(drop=lengths < self.min_chars, reason="too_short")
