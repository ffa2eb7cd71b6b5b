"""Language identification with fastText's lid.176 (as CCNet), on the deduplicated text.

fastText predicts on one line, so newlines become spaces. Documents whose top language is not in
the configured set, or scores under the threshold, are dropped as `language`.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.accounting import StageStats
from pipeline.models import default_lid_path, load_fasttext


def predict_languages(model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    labels, probs = model.predict(texts, k=1)
    langs = [lab[0][len("__label__") :] if lab else "unknown" for lab in labels]
    scores = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float32)
    return langs, np.minimum(scores, 1.0)  # fastText's softmax can exceed 1 by an ulp


@dataclasses.dataclass
class IdentifyLanguage:
    model_path: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    languages: tuple[str, ...] | None = ("en",)  # None keeps every language
    threshold: float = 0.5
    name: str = "language"

    def load(self):
        return load_fasttext(self.model_path)

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats(self.name, docs_in=batch.num_rows)
        model = self.load()
        text = batch.column("text")
        flat = pc.replace_substring(text, "\n", " ").to_pylist()
        langs, scores = predict_languages(model, flat)
        keep = scores >= self.threshold
        if self.languages is not None:
            keep &= np.isin(np.array(langs, dtype=object), list(self.languages))
        stats.drop("language", int((~keep).sum()))
        stats.docs_out = int(keep.sum())
        lengths = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        nlines = batch.column("nlines").to_numpy(zero_copy_only=False)
        stats.chars_in, stats.chars_out = int(lengths.sum()), int(lengths[keep].sum())
        stats.lines_in, stats.lines_out = int(nlines.sum()), int(nlines[keep].sum())
        out = batch.append_column("language", pa.array(langs, pa.string()))
        out = out.append_column("language_score", pa.array(scores, pa.float32()))
        return out.filter(pa.array(keep)), stats
