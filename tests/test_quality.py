"""The Wikipedia-vs-web quality classifier: metrics, training set, bad input, the jobs end to end."""
import gzip
import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from classifiers.metrics import at_threshold, roc_auc
from classifiers.quality import NEGATIVE, POSITIVE, QualityModel, build_training_set, prepare
from pipeline.cli import main
from pipeline.models import ModelError
from tests.conftest import WARCS, WIKI


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200), 1)  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[labels], scores[~labels])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(labels, scores) == pytest.approx(expected)
    m = at_threshold(labels, scores, 0.5)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == 200


def test_prepare_is_what_scoring_sees():
    assert prepare("The  Moon\nis a\tsatellite.\n") == "the moon is a satellite."
    assert prepare(prepare("A\nB")) == prepare("A\nB")


def test_training_set_is_balanced_deduplicated_and_seeded():
    pos = [f"wiki article number {i}" for i in range(50)] + ["wiki article number 1"]
    neg = [f"buy now page {i}" for i in range(20)]
    a = build_training_set(pos, neg, seed=1)
    b = build_training_set(pos, neg, seed=1)
    assert a.train == b.train and a.heldout == b.heldout
    labels = [lab for lab, _ in a.train + a.heldout]
    assert labels.count(POSITIVE) == labels.count(NEGATIVE) == 20
    assert a.counts["positives_unique"] == 50
    assert {lab for lab, _ in a.heldout} == {POSITIVE, NEGATIVE}
    assert build_training_set(pos, neg, seed=2).train != a.train


@pytest.mark.parametrize("pos, neg", [([], ["x"]), (["x"], []), (["same"], ["same"]), ([], [])])
def test_one_class_or_empty_is_a_clear_error(pos, neg):
    with pytest.raises(ValueError, match="needs both classes"):
        build_training_set(pos, neg)


def test_model_of_the_wrong_kind(lid_model):
    with pytest.raises(ValueError, match="not a quality classifier"):
        QualityModel.load(lid_model)


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="train-quality"):
        QualityModel.load(str(tmp_path / "none.bin"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lm_dir):
    """ccnet without quality (the negatives), then train-quality on the bundled Wikipedia slice."""
    root = tmp_path_factory.mktemp("quality")
    args = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    assert main(["ccnet", "--input", *WARCS, "--output", str(root / "unfiltered"), "--lm-dir", lm_dir,
                 "--no-quality", "--keep-buckets", "head,middle,tail", *args]) == 0
    assert main(["train-quality", "--positives", str(WIKI), "--negatives", str(root / "unfiltered" / "*.parquet"),
                 "--output", str(root / "model"), *args]) == 0
    return root


def test_train_quality_writes_model_and_card(trained):
    card = json.loads((trained / "model" / "wiki_vs_cc.bin.json").read_text())
    assert card["data"]["counts"]["per_class"] > 40
    assert card["heldout"]["roc_auc"] >= 0.9
    assert card["hyper_parameters"]["thread"] == 1 and card["threshold"] == 0.25
    assert (trained / "model" / "examples" / "positives.txt").is_file()


def test_classifier_separates_wikipedia_from_web(trained):
    model = QualityModel.load(str(trained / "model" / "wiki_vs_cc.bin"))
    with gzip.open(WIKI, "rt") as f:
        wiki = [json.loads(line)["text"] for line in itertools.islice(f, 7000, 7100)]  # mostly unseen in training
    web = pq.read_table(trained / "unfiltered" / "part-00000.parquet").column("text").to_pylist()
    assert np.median(model.wiki_probability(wiki)) > np.median(model.wiki_probability(web))


def test_ccnet_with_quality_model(trained, tmp_path, lm_dir, capsys):
    model = str(trained / "model" / "wiki_vs_cc.bin")
    assert main(["ccnet", "--input", *WARCS, "--output", str(tmp_path), "--lm-dir", lm_dir, "--quality-model", model,
                 "--quality-threshold", "0.5", "--direct_num_workers=1", "--direct_running_mode=in_memory"]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    quality = stats["stages"][-1]
    assert quality["name"] == "quality" and quality["docs_in"] == quality["docs_out"] + quality["dropped"].get("quality", 0)
    scores = [s for f in stats["files"] for s in pq.read_table(tmp_path / f).column("quality_score").to_pylist()]
    assert len(scores) == stats["kept"] and all(s >= 0.5 for s in scores)


def test_eval_quality(trained, capsys):
    model = str(trained / "model" / "wiki_vs_cc.bin")
    assert main(["eval-quality", "--model", model, "--positives", str(WIKI),
                 "--negatives", str(trained / "unfiltered" / "*.parquet"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["positives"] == 8033 and metrics["roc_auc"] > 0.9
