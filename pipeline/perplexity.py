"""Perplexity under a KenLM n-gram trained on Wikipedia, and CCNet's head/middle/tail buckets.

Scoring is CCNet's (cc_net/mine.py:392-404 at bda555b, with cc_net/perplexity.py): the *whole*
document is normalised (`normalize_for_lm`, cc_net's `text_normalizer.normalize`); that removes the
newlines with the other non-printing characters, so the document becomes one sequence, which is
SentencePiece-encoded and scored by KenLM once, with sentence boundaries. Perplexity is
`10 ** (-log10 score / (pieces + 1))`, rounded to 0.1. A document whose normalised text is empty gets
no perplexity (cc_net leaves the field out), hence no bucket. The LM is trained on text normalised the
same way, one document a line (`pipeline/lm_train.py`).

Buckets: a document is `head` below its language's 30th-percentile cut-off, `middle` below the
60th, else `tail`. Cut-offs come from a file (`lm-cutoffs`) or, as CCNet computed them, from the
perplexities of the run itself. Documents in buckets not kept (default: tail) are dropped as
`perplexity`.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.models import ModelError, default_lm_dir, load_kenlm, load_sentencepiece
from pipeline.step import Outcome, Step
from pipeline.text import normalize_for_lm

BUCKETS = ("head", "middle", "tail")
DEFAULT_PERCENTILES = (30.0, 60.0)


def lm_paths(lm_dir: str, language: str) -> tuple[str, str]:
    return os.path.join(lm_dir, f"{language}.sp.model"), os.path.join(lm_dir, f"{language}.arpa.bin")


def available_languages(lm_dir: str) -> list[str]:
    if not os.path.isdir(lm_dir):
        return []
    return sorted(
        f[: -len(".sp.model")]
        for f in os.listdir(lm_dir)
        if f.endswith(".sp.model") and os.path.isfile(lm_paths(lm_dir, f[: -len(".sp.model")])[1])
    )


def document_perplexity(sp, lm, text: str) -> float | None:
    """cc_net's document perplexity; None when nothing is left after normalisation."""
    normalized = normalize_for_lm(text)
    if not normalized:
        return None
    tokenized = " ".join(sp.encode_as_pieces(normalized))
    # cc_net's DocLM splits the tokenized field on "\n" and scores each part; normalisation removed
    # every newline, so there is exactly one part: the whole document.
    length = len(tokenized.split()) + 1  # the pieces and </s>
    return round(10.0 ** (-lm.score(tokenized) / length), 1)


@dataclasses.dataclass
class ScorePerplexity(Step):
    """Adds `perplexity`; documents in a language without an LM, or with no text left after
    normalisation, get null (and no bucket)."""

    lm_dir: str = dataclasses.field(default_factory=lambda: os.fspath(default_lm_dir()))
    languages: tuple[str, ...] = ("en",)
    name: str = "perplexity_score"

    def __post_init__(self):
        self._models: dict | None = None


    def check(self) -> None:
        missing = [lang for lang in self.languages if lang not in available_languages(self.lm_dir)]
        if missing:
            raise ModelError(
                f"no perplexity LM for {', '.join(missing)} in {self.lm_dir!r} (expected <lang>.sp.model and "
                f"<lang>.arpa.bin): run `corpusmill train-lm --language {missing[0]}` or pass --lm-dir"
            )

    def models(self) -> dict:
        """language -> (SentencePiece, KenLM), loaded once per step instance (so once per worker)."""
        if self._models is None:
            self.check()
            self._models = {}
            for lang in self.languages:
                sp_path, lm_path = lm_paths(self.lm_dir, lang)
                self._models[lang] = (load_sentencepiece(sp_path), load_kenlm(lm_path))
        return self._models

    def process(self, batch, notes):
        models = self.models()
        out = []
        for text, lang in zip(batch.column("text").to_pylist(), batch.column("language").to_pylist()):
            model = models.get(lang)
            ppl = document_perplexity(*model, text) if model is not None else None
            if model is not None and ppl is None:
                notes["unscored_empty_after_normalization"] += 1
            out.append(ppl)
        return Outcome(columns={"perplexity": pa.array(out, pa.float32())})



def compute_cutoffs(perplexities: dict[str, np.ndarray], percentiles=DEFAULT_PERCENTILES) -> dict[str, list[float]]:
    """Per language, the perplexity values at the given percentiles (CCNet: 30th and 60th)."""
    out = {}
    for lang in sorted(perplexities):
        values = np.sort(np.asarray(perplexities[lang], dtype=np.float64))
        if len(values):
            out[lang] = [round(float(np.percentile(values, p, method="linear")), 2) for p in percentiles]
    return out


def read_perplexities(paths: list[str]) -> tuple[dict[str, np.ndarray], int]:
    """(language -> the non-null perplexities, rows read) of document Parquet shards (only those two
    columns are read, one row group at a time)."""
    values: dict[str, list[np.ndarray]] = {}
    rows = 0
    for path in paths:
        reader = pq.ParquetFile(path)
        for i in range(reader.num_row_groups):
            rg = reader.read_row_group(i, columns=["language", "perplexity"])
            rows += rg.num_rows
            langs = np.array(rg.column("language").to_pylist(), dtype=object)
            ppl = rg.column("perplexity").to_numpy(zero_copy_only=False).astype(np.float64)
            ok = ~np.isnan(ppl)
            for lang in sorted(set(langs[ok])):
                values.setdefault(lang, []).append(ppl[ok & (langs == lang)])
    return {lang: np.concatenate(v) for lang, v in values.items()}, rows


def load_cutoffs(path: str) -> dict[str, list[float]]:
    try:
        with open(path) as f:
            data = json.load(f)
        cutoffs = data.get("cutoffs", data)
        return {str(k): [float(v[0]), float(v[1])] for k, v in cutoffs.items()}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"cannot read perplexity cut-offs from {path!r}: {err}") from err


def bucket_of(perplexity: float | None, cutoffs: list[float] | None) -> str | None:
    """cc_net's PerplexityBucket.get_bucket (cc_net/perplexity.py:273-284); None where cc_net says "all"."""
    if perplexity is None or cutoffs is None or perplexity < 0:
        return None
    return "head" if perplexity < cutoffs[0] else "middle" if perplexity < cutoffs[1] else "tail"


@dataclasses.dataclass
class BucketByPerplexity(Step):
    """Adds `bucket` and drops the documents of the buckets not kept as `perplexity`. Documents without
    a bucket (no LM for their language) are kept."""

    cutoffs: dict[str, list[float]] | None = None
    keep_buckets: tuple[str, ...] = ("head", "middle")
    name: str = "perplexity"

    def process(self, batch, notes):
        assert self.cutoffs is not None, "BucketByPerplexity.cutoffs must be set"
        ppl = batch.column("perplexity").to_pylist()
        langs = batch.column("language").to_pylist()
        buckets = [bucket_of(p, self.cutoffs.get(lang)) for p, lang in zip(ppl, langs)]
        drop = np.array([b is not None and b not in self.keep_buckets for b in buckets], dtype=bool)
        return Outcome(columns={"bucket": pa.array(buckets, pa.string())}, drop=drop, reason="perplexity")

