"""lid.176 language ID and the KenLM perplexity, with the real models."""
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.langid import IdentifyLanguage, predict_languages
from pipeline.models import ModelError, load_fasttext
from pipeline.perplexity import BucketByPerplexity, ScorePerplexity, compute_cutoffs, document_perplexity, lm_paths
from pipeline.models import load_kenlm, load_sentencepiece
from tests.conftest import WIKI

UD = Path(__file__).parent / "data" / "langid" / "ud-sample.tsv"


def test_lid176_on_real_sentences(lid_model):
    pairs = [line.rstrip("\n").split("\t", 1) for line in UD.open(encoding="utf-8")]
    langs, scores = predict_languages(load_fasttext(lid_model), [s for _, s in pairs])
    accuracy = np.mean([got == want for got, (want, _) in zip(langs, pairs)])
    assert accuracy >= 0.95, accuracy
    assert scores.min() >= 0 and scores.max() <= 1


def test_language_step_keeps_configured_languages(lid_model):
    pairs = [line.rstrip("\n").split("\t", 1) for line in UD.open(encoding="utf-8")]
    batch = pa.RecordBatch.from_pylist([{"text": s, "nlines": 1} for _, s in pairs])
    out, stats = IdentifyLanguage(lid_model, ("en", "fr"), 0.5)(batch)
    assert set(out.column("language").to_pylist()) <= {"en", "fr"}
    assert 25 <= out.num_rows <= 30
    assert stats.docs_in == out.num_rows + stats.dropped["language"]


def test_missing_model_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelError, match="make models/lid.176.ftz"):
        IdentifyLanguage(str(tmp_path / "lid.176.ftz")).load()


def test_unreadable_model_file(tmp_path):
    bad = tmp_path / "lid.176.ftz"
    bad.write_bytes(b"this is not a fastText model")
    with pytest.raises(ModelError, match="could not be loaded"):
        load_fasttext(str(bad))


def test_missing_lm_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelError, match="corpusmill train-lm"):
        ScorePerplexity(str(tmp_path), ("en",)).check()


def test_wikipedia_text_is_less_perplexing_than_boilerplate(lm_dir):
    sp, lm = (load_sentencepiece(lm_paths(lm_dir, "en")[0]), load_kenlm(lm_paths(lm_dir, "en")[1]))
    with gzip.open(WIKI, "rt") as f:
        wiki = [json.loads(next(f))["text"] for _ in range(3)]
    boilerplate = "Home | Login | Cart (0)\nSHOP NOW >> FREE SHIPPING!!!\nCookie settings Accept all\n© 2023 All rights reserved"
    wiki_ppl = [document_perplexity(sp, lm, t) for t in wiki]
    assert max(wiki_ppl) < document_perplexity(sp, lm, boilerplate)


def test_buckets_from_cutoffs():
    cut = compute_cutoffs({"en": np.arange(1, 101, dtype=np.float32)})
    assert cut == {"en": [30.7, 60.4]}
    batch = pa.RecordBatch.from_pylist(
        [{"text": "x", "nlines": 1, "language": "en", "perplexity": p} for p in (10.0, 45.0, 90.0)]
        + [{"text": "y", "nlines": 1, "language": "de", "perplexity": None}]
    )
    out, stats = BucketByPerplexity(cut)(batch)
    assert out.column("bucket").to_pylist() == ["head", "middle", None]
    assert stats.dropped["perplexity"] == 1
