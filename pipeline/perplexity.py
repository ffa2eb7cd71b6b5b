"""Perplexity under a KenLM n-gram trained on Wikipedia, and CCNet's head/middle/tail buckets.

Scoring follows CCNet (cc_net/perplexity.py): each line is normalised (`normalize_for_lm`),
SentencePiece-encoded, and scored by KenLM with sentence boundaries; the document's perplexity is
`10 ** (-sum(log10 scores) / sum(pieces + 1))`, rounded to 0.1. The same normalisation and
tokenisation are used to train the LM (`corpusmill train-lm`).

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
import pyarrow.compute as pc

from pipeline.accounting import StageStats
from pipeline.models import ModelError, default_lm_dir, load_kenlm, load_sentencepiece
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


def document_perplexity(sp, lm, text: str) -> float:
    lines = [normalize_for_lm(line) for line in text.split("\n")]
    pieces = sp.encode(lines, out_type=str)
    log_score, length = 0.0, 0
    for line_pieces in pieces:
        log_score += lm.score(" ".join(line_pieces))
        length += len(line_pieces) + 1
    return round(10.0 ** (-log_score / max(length, 1)), 1)


@dataclasses.dataclass
class ScorePerplexity:
    """Adds `perplexity`; documents in a language without an LM get null (and no bucket)."""

    lm_dir: str = dataclasses.field(default_factory=lambda: os.fspath(default_lm_dir()))
    languages: tuple[str, ...] = ("en",)
    name: str = "perplexity_score"

    def check(self) -> None:
        missing = [lang for lang in self.languages if lang not in available_languages(self.lm_dir)]
        if missing:
            raise ModelError(
                f"no perplexity LM for {', '.join(missing)} in {self.lm_dir!r} (expected <lang>.sp.model and "
                f"<lang>.arpa.bin): run `corpusmill train-lm --language {missing[0]}` or pass --lm-dir"
            )

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        stats = StageStats(self.name, docs_in=batch.num_rows, docs_out=batch.num_rows)
        texts = batch.column("text").to_pylist()
        langs = batch.column("language").to_pylist()
        out = []
        for text, lang in zip(texts, langs):
            if lang in self.languages:
                sp_path, lm_path = lm_paths(self.lm_dir, lang)
                out.append(document_perplexity(load_sentencepiece(sp_path), load_kenlm(lm_path), text))
            else:
                out.append(None)
        lengths = int(pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0)
        nlines = int(pc.sum(batch.column("nlines")).as_py() or 0)
        stats.chars_in = stats.chars_out = lengths
        stats.lines_in = stats.lines_out = nlines
        return batch.append_column("perplexity", pa.array(out, pa.float32())), stats


def compute_cutoffs(perplexities: dict[str, np.ndarray], percentiles=DEFAULT_PERCENTILES) -> dict[str, list[float]]:
    """Per language, the perplexity values at the given percentiles (CCNet: 30th and 60th)."""
    out = {}
    for lang in sorted(perplexities):
        values = np.sort(np.asarray(perplexities[lang], dtype=np.float64))
        if len(values):
            out[lang] = [round(float(np.percentile(values, p, method="linear")), 2) for p in percentiles]
    return out


def load_cutoffs(path: str) -> dict[str, list[float]]:
    try:
        with open(path) as f:
            data = json.load(f)
        cutoffs = data.get("cutoffs", data)
        return {str(k): [float(v[0]), float(v[1])] for k, v in cutoffs.items()}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"cannot read perplexity cut-offs from {path!r}: {err}") from err


@dataclasses.dataclass
class BucketByPerplexity:
    cutoffs: dict[str, list[float]] | None = None
    keep_buckets: tuple[str, ...] = ("head", "middle")
    name: str = "perplexity"

    def __call__(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, StageStats]:
        assert self.cutoffs is not None, "BucketByPerplexity.cutoffs must be set"
        stats = StageStats(self.name, docs_in=batch.num_rows)
        ppl = batch.column("perplexity").to_pylist()
        langs = batch.column("language").to_pylist()
        buckets = []
        for p, lang in zip(ppl, langs):
            cut = self.cutoffs.get(lang)
            if p is None or cut is None:
                buckets.append(None)
            else:
                buckets.append("head" if p < cut[0] else "middle" if p < cut[1] else "tail")
        keep = np.array([b is None or b in self.keep_buckets for b in buckets], dtype=bool)
        stats.drop("perplexity", int((~keep).sum()))
        stats.docs_out = int(keep.sum())
        lengths = pc.utf8_length(batch.column("text")).to_numpy(zero_copy_only=False)
        nlines = batch.column("nlines").to_numpy(zero_copy_only=False)
        stats.chars_in, stats.chars_out = int(lengths.sum()), int(lengths[keep].sum())
        stats.lines_in, stats.lines_out = int(nlines.sum()), int(nlines[keep].sum())
        out = batch.append_column("bucket", pa.array(buckets, pa.string()))
        return out.filter(pa.array(keep)), stats
