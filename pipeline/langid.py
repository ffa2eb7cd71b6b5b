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

from pipeline.models import default_lid_path, load_fasttext
from pipeline.step import Outcome, Step


def predict_languages(model, texts: list[str]) -> tuple[list[str], np.ndarray]:
    labels, probs = model.predict(texts, k=1)
    langs = [lab[0][len("__label__") :] if lab else "unknown" for lab in labels]
    scores = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float32)
    return langs, np.minimum(scores, 1.0)  # fastText's softmax can exceed 1 by an ulp


@dataclasses.dataclass
class IdentifyLanguage(Step):
    model_path: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    languages: tuple[str, ...] | None = ("en",)  # None keeps every language
    threshold: float = 0.5
    name: str = "language"

    def load(self):
        return load_fasttext(self.model_path)

    def process(self, batch, notes):
        model = self.load()
        flat = pc.replace_substring(batch.column("text"), "\n", " ").to_pylist()
        langs, scores = predict_languages(model, flat)
        keep = scores >= self.threshold
        if self.languages is not None:
            keep &= np.isin(np.array(langs, dtype=object), list(self.languages))
        return Outcome(drop=~keep, reason="language",
                       columns={"language": pa.array(langs, pa.string()), "language_score": pa.array(scores, pa.float32())})
