"""The CCNet web pipeline as plain steps, and an in-process executor of it (tests, benchmarks).

    read (WARC/WET/ARC) -> extract -> dedup_in_document -> [global line census] -> dedup
        -> language -> perplexity_score -> [per-language cut-offs] -> perplexity (bucket filter)
        -> quality (Wikipedia-vs-web classifier, threshold)

The two bracketed points are global barriers; `beam_jobs/ccnet.py` runs the same steps on Beam with
the census as a combine per hash range and the cut-offs as a global combine.
"""
from __future__ import annotations

import dataclasses
import os
import numpy as np
import pyarrow as pa

from pipeline.accounting import JobStats, StageStats, apply_steps, merge_stage_stats
from pipeline.dedup import ApplyDedup, HashLines, duplicate_table
from pipeline.extract import ExtractText
from pipeline.langid import IdentifyLanguage
from pipeline.models import default_lid_path, default_lm_dir, default_quality_model_path, load_fasttext
from pipeline.perplexity import BucketByPerplexity, ScorePerplexity, compute_cutoffs, load_cutoffs
from pipeline.quality_filter import DEFAULT_THRESHOLD, ScoreQuality
from pipeline.warc import iter_raw_batches

STAGES = ["read", "extract", "dedup_in_document", "dedup", "language", "perplexity_score", "perplexity", "quality"]


@dataclasses.dataclass
class CCNetConfig:
    extractor: str = "resiliparse"
    dedup_policy: str = "remove_all"
    dedup_range_bits: int = 4  # 16 hash ranges: the census runs as 16 independent reductions
    languages: tuple[str, ...] | None = ("en",)
    lid_threshold: float = 0.5
    lid_model: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    lm_dir: str = dataclasses.field(default_factory=lambda: os.fspath(default_lm_dir()))
    cutoffs: str | None = None  # a cut-off file; None: <lm_dir>/cutoffs.json if present, else from this run
    keep_buckets: tuple[str, ...] = ("head", "middle")
    quality_model: str | None = dataclasses.field(default_factory=lambda: _default_quality_model())
    quality_threshold: float = DEFAULT_THRESHOLD
    batch_records: int = 64
    read_parts: int = 2  # workers sharing one input file (each reads it, takes every n-th record)

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

    def before_census(self) -> list:
        return [ExtractText(self.extractor), HashLines()]

    def after_census(self) -> list:
        return [
            ApplyDedup(self.dedup_policy),
            IdentifyLanguage(self.lid_model, self.languages, self.lid_threshold),
            ScorePerplexity(self.lm_dir, self.lm_languages),
        ]

    def bucket(self) -> BucketByPerplexity:
        return BucketByPerplexity(keep_buckets=self.keep_buckets)

    def after_buckets(self) -> list:
        return [self.bucket(), ScoreQuality(self.quality_model, self.quality_threshold)]


def _default_quality_model() -> str | None:
    """models/quality/wiki_vs_cc.bin if it exists; else no quality filter (the step notes it)."""
    path = default_quality_model_path()
    return os.fspath(path) if path.is_file() else None


def perplexities_by_language(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    langs = np.array(batch.column("language").to_pylist(), dtype=object)
    ppl = batch.column("perplexity").to_numpy(zero_copy_only=False)
    out = {}
    for lang in sorted(set(langs[~np.isnan(ppl)])):
        out[lang] = ppl[(langs == lang) & ~np.isnan(ppl)].astype(np.float32)
    return out


def run_local(paths: list[str], config: CCNetConfig) -> tuple[pa.Table, JobStats, list[dict], dict]:
    """Run the whole pipeline in this process. Returns (documents, stats, dead letters, cut-offs)."""
    stats: list[StageStats] = []
    dead: list[dict] = []

    def apply(steps, batch):
        return apply_steps(steps, batch, stats)

    hashed = []
    for file_index, path in enumerate(paths):
        for part in range(config.read_parts):
            read = StageStats("read")
            for _, raw in iter_raw_batches(path, file_index, read, dead, config.batch_records, part, config.read_parts):
                hashed.append(apply(config.before_census(), raw))
            stats.append(read)
    hashed.sort(key=lambda b: b.column("_ord")[0].as_py() if b.num_rows else -1)
    after = config.after_census()
    after[0].table = duplicate_table(hashed, config.dedup_range_bits)
    scored = [apply(after, b) for b in hashed]
    cutoffs = config.fixed_cutoffs()
    if cutoffs is None:
        collected: dict[str, list] = {}
        for b in scored:
            for lang, values in perplexities_by_language(b).items():
                collected.setdefault(lang, []).append(values)
        cutoffs = compute_cutoffs({k: np.concatenate(v) for k, v in collected.items()})
    final = config.after_buckets()
    final[0].cutoffs = cutoffs
    kept = [apply(final, b) for b in scored]
    kept = [b for b in kept if b.num_rows]
    job = JobStats.from_merged("ccnet", STAGES, merge_stage_stats(stats))
    table_out = pa.Table.from_batches(kept).sort_by("_ord") if kept else None
    return table_out, job, dead, cutoffs

