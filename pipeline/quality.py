"""The quality filter step: `quality_score` = P(wikipedia) from the linear classifier (`classifiers/`),
and documents under the threshold dropped as `quality` (RedPajama v1 kept `wiki_prob` >= 0.25).

Without a model the step passes every document through unscored and notes how many, so that a
corpus can be made before a classifier exists (the classifier's negatives come from such a run).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.accounting import StageStats

DEFAULT_THRESHOLD = 0.25


@dataclasses.dataclass
class ScoreQuality:
    model_path: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    name: str = "quality"

    def load(self):
        from classifiers.quality import QualityModel

        return QualityModel.load(self.model_path)

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats(self.name, docs_in=batch.num_rows)
        lengths = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
        nlines = batch.column("nlines").to_numpy(zero_copy_only=False)
        stats.chars_in, stats.lines_in = int(lengths.sum()), int(nlines.sum())
        if self.model_path is None:
            stats.notes["unscored_no_model"] += batch.num_rows
            keep = np.ones(batch.num_rows, bool)
            scores = pa.nulls(batch.num_rows, pa.float32())
        else:
            values = self.load().wiki_probability(batch.column("text").to_pylist())
            keep = values >= self.threshold
            scores = pa.array(values, pa.float32())
        stats.drop("quality", int((~keep).sum()))
        stats.docs_out = int(keep.sum())
        stats.chars_out, stats.lines_out = int(lengths[keep].sum()), int(nlines[keep].sum())
        if "quality_score" in batch.schema.names:
            batch = batch.drop_columns(["quality_score"])
        return batch.append_column("quality_score", scores).filter(pa.array(keep)), stats
