"""lid.176 language ID and the KenLM perplexity, with the real models."""
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.langid import IdentifyLanguage, predict_languages
from pipeline.models import ModelError, load_fasttext
import pickle

from pipeline.perplexity import BucketByPerplexity, ScorePerplexity, compute_cutoffs, document_perplexity, lm_paths
from pipeline.models import load_kenlm, load_sentencepiece
from pipeline.text import normalize_for_lm
from tests.conftest import SAMPLE, WIKI

C4 = SAMPLE / "c4" / "c4-00000.json.gz"


def _lm(lm_dir):
    return load_sentencepiece(lm_paths(lm_dir, "en")[0]), load_kenlm(lm_paths(lm_dir, "en")[1])


def _c4_texts(n):
    with gzip.open(C4, "rt") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]

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
    assert (stats.docs_in, stats.docs_out, stats.lines_in, stats.lines_out) == (4, 3, 4, 3)


def test_lm_normalization_is_cc_nets_on_a_whole_document():
    # cc_net text_normalizer.normalize: strip, lower, accents, digits -> 0, punctuation table, and the
    # non-printing characters removed -- the newline too, so the two lines are glued together.
    text = "  Ça coûte 12,50 €\n— «Très» bien…  "
    assert normalize_for_lm(text) == 'ca coute 00,00 € -  "tres" bien...'  # "—" -> " - ", then the space


def test_perplexity_scores_the_document_as_one_sequence(lm_dir):
    sp, lm = _lm(lm_dir)
    doc = _c4_texts(1)[0]
    lines = doc.split("\n")
    assert len(lines) > 1
    # One sequence: the newlines vanish in normalisation, so the lines glued give the same perplexity.
    assert document_perplexity(sp, lm, doc) == document_perplexity(sp, lm, "".join(lines))
    # length = pieces + 1: KenLM's per-token scores (each piece, then </s>) say the same.
    tokens = " ".join(sp.encode_as_pieces(normalize_for_lm(doc)))
    per_token = [log10 for log10, _, _ in lm.full_scores(tokens)]
    assert len(per_token) == len(tokens.split()) + 1
    assert document_perplexity(sp, lm, doc) == round(10 ** (-sum(per_token) / len(per_token)), 1)
    # Scoring line by line (corpusmill before) gives another value.
    per_line = [" ".join(sp.encode_as_pieces(normalize_for_lm(line))) for line in lines]
    by_line = 10 ** (-sum(lm.score(t) for t in per_line) / sum(len(t.split()) + 1 for t in per_line))
    assert round(by_line, 1) != document_perplexity(sp, lm, doc)


def test_step_loads_models_once_and_not_into_the_pickle(lm_dir):
    docs = _c4_texts(5) + ["  \n\t "]
    batch = pa.RecordBatch.from_pylist([{"text": t, "nlines": t.count("\n") + 1, "language": "en"} for t in docs])
    step = ScorePerplexity(lm_dir, ("en",))
    out, stats = step(batch)
    assert step.models() is step.models()
    sp, lm = _lm(lm_dir)
    assert out.column("perplexity").to_pylist()[:5] == pytest.approx([document_perplexity(sp, lm, t) for t in docs[:5]], abs=1e-4)
    assert out.column("perplexity").to_pylist()[5] is None  # nothing left after normalisation: no perplexity
    assert stats.notes["unscored_empty_after_normalization"] == 1 and stats.docs_out == 6
    clone = pickle.loads(pickle.dumps(step))
    assert clone._models is None and step._models is not None and len(pickle.dumps(step)) < 1000
    assert clone(batch)[0].column("perplexity").equals(out.column("perplexity"))


def test_lm_is_trained_as_cc_net_configures_it(lm_dir):
    card = json.loads((Path(lm_dir) / "en.lm.json").read_text())
    with gzip.open(WIKI, "rt") as f:
        documents = sum(1 for line in f if normalize_for_lm(json.loads(line)["text"]))
    assert card["documents"] == documents  # one line per document, not per paragraph
    sp, _ = _lm(lm_dir)
    # SentencePiece's default nmt_nfkc normalisation (cc_net passed no --normalization_rule_name):
    # the ligature and the full-width letters are folded to plain ASCII before the pieces.
    assert "".join(sp.encode_as_pieces("ﬁne ｆｉｎｅ")).replace("▁", " ").strip() == "fine fine"
    assert sp.get_piece_size() == 4000  # hard vocabulary limit: exactly the size asked for


def test_too_large_vocabulary_is_a_clear_error(tmp_path):
    from pipeline.lm_train import train_lm

    small = tmp_path / "wiki.jsonl"
    with gzip.open(WIKI, "rt") as f, small.open("w") as out:
        for line, _ in zip(f, range(20)):
            out.write(line)
    with pytest.raises(ValueError, match="smaller --vocab-size"):
        train_lm([str(small)], str(tmp_path / "lm"), "en", vocab_size=65536)


def test_lm_cutoffs_command_reads_shards(lm_dir, tmp_path):
    import pyarrow.parquet as pq

    from beam_jobs.cli import main

    sp, lm = _lm(lm_dir)
    ppl = [document_perplexity(sp, lm, t) for t in _c4_texts(40)]
    rows = [{"language": "en", "perplexity": p} for p in ppl] + [{"language": "en", "perplexity": None},
                                                                  {"language": "fr", "perplexity": 50.0}]
    for i in (0, 1):  # two shards
        pq.write_table(pa.Table.from_pylist(rows[i::2], pa.schema([("language", pa.string()), ("perplexity", pa.float32())])),
                       tmp_path / f"part-{i}.parquet")
    assert main(["lm-cutoffs", "--input", str(tmp_path / "part-*.parquet"), "--output", str(tmp_path / "cutoffs.json")]) == 0
    doc = json.loads((tmp_path / "cutoffs.json").read_text())
    en = np.array(ppl, np.float32).astype(np.float64)  # the column is float32
    assert doc["cutoffs"]["en"] == [round(float(np.percentile(en, 30)), 2), round(float(np.percentile(en, 60)), 2)]
    assert doc["documents"] == {"en": 40, "fr": 1} and doc["cutoffs"]["fr"] == [50.0, 50.0]
    assert doc["read"] == {"rows": len(rows), "with_perplexity": 41, "without_perplexity": 1}
