"""The quality filter step: `quality_score` = P(wiki) from the linear classifier
(`classifiers/quality_model.py`), and documents under the threshold dropped as `quality` (RedPajama v1
kept `wiki_prob >= 0.25`, data_prep/cc/filter/cc_classifier.sh:33).

Without a model the step passes every document through unscored and notes how many, so that a
corpus can be made before a classifier exists (the classifier's examples come from such a run).
"""
from __future__ import annotations

import dataclasses

import pyarrow as pa

from classifiers.quality_model import QualityModel
from pipeline.step import Outcome, Step

DEFAULT_THRESHOLD = 0.25


@dataclasses.dataclass
class ScoreQuality(Step):
    model_path: str | None = None
    threshold: float = DEFAULT_THRESHOLD
    name: str = "quality"

    def __post_init__(self):
        self._model: QualityModel | None = None


    def load(self) -> QualityModel:
        """The classifier, loaded once per step instance (so once per worker)."""
        if self._model is None:
            self._model = QualityModel.load(self.model_path)
        return self._model

    def process(self, batch, notes):
        if self.model_path is None:
            notes["unscored_no_model"] += batch.num_rows
            return Outcome(columns={"quality_score": pa.nulls(batch.num_rows, pa.float32())})
        scores = self.load().wiki_probability(batch.column("text").to_pylist())
        return Outcome(
            columns={"quality_score": pa.array(scores, pa.float32())}, drop=~(scores >= self.threshold), reason="quality"
        )

