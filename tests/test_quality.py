"""The linear quality classifier: metrics, training set, the cited URLs of a dump, bad input, the jobs end to end."""
import argparse
import gzip
import itertools
import json
import pickle

import bz2

import numpy as np
import pyarrow.parquet as pq
import pytest

from classifiers.metrics import at_threshold, roc_auc
from classifiers.quality_model import MIN_POSITIVE_CHARS, NEGATIVE, POSITIVE, QualityModel, build_training_set, prepare
from beam_jobs.cli import main
from pipeline.models import ModelError
from pipeline.quality_filter import ScoreQuality
from pipeline.wiki_refs import domain_key, ref_urls, template_urls, url_key
from tests.conftest import SAMPLE, WARCS, WIKI

DUMP = SAMPLE / "wikipedia" / "enwiki-first-pages.xml.bz2"
# Two raw lines of that dump (articles "Anarchism" and "Albedo"), as the XML holds them (escaped).
REF_LINE = ('&lt;ref&gt;[http://www.theanarchistlibrary.org/HTML/Petr_Kropotkin___Anarchism__from_the_Encyclopaedia_Britannica.html '
            'Anarchism] from the Encyclopaedia Britannica&lt;/ref&gt; and fell under; see &lt;ref name=&quot;x&quot;&gt;'
            '{{cite book |url=http://books.google.com/books?id=kkj5i3CeGbQC&amp;pg=PA1 |title=T}}&lt;/ref&gt;.')


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200), 1)  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[labels], scores[~labels])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(labels, scores) == pytest.approx(expected)
    m = at_threshold(labels, scores, 0.5)
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == 200


def test_prepare_is_redpajamas():
    # classify.py:40: " ".join(content.strip().splitlines()): case and inner spacing kept.
    assert prepare("The  Moon\nis a\tsatellite.\r\n") == "The  Moon is a\tsatellite."
    assert prepare(prepare("A\nB")) == prepare("A\nB")


def test_cited_urls_of_a_dump_line_as_redpajama_extracts_them():
    # The span runs from the first bare <ref> to the last </ref> of the line; inside it every URL, and
    # an escaped & ends a URL at "&amp" (the reference reads the escaped XML).
    assert ref_urls(REF_LINE) == [
        "http://www.theanarchistlibrary.org/HTML/Petr_Kropotkin___Anarchism__from_the_Encyclopaedia_Britannica.html",
        "http://books.google.com/books?id=kkj5i3CeGbQC&amp",
    ]
    assert ref_urls(REF_LINE.replace("&lt;ref&gt;[", "&lt;ref name=&quot;k&quot;&gt;[", 1)) == []
    assert template_urls(REF_LINE) == ["http://books.google.com/books?id=kkj5i3CeGbQC&pg=PA1"]


def test_url_and_domain_keys():
    assert url_key("https://www.Example.org/a/b/?q=1#top") == url_key("http://example.org/a/b?q=1") == "example.org/a/b?q=1"
    assert domain_key("http://WWW.bbc.co.uk:80/news") == "bbc.co.uk"
    assert url_key("not a url") is None


def _wiki_refs(argv):
    from beam_jobs import wiki_refs

    parser = argparse.ArgumentParser()
    wiki_refs.add_arguments(parser)
    return wiki_refs.run(parser.parse_args(argv), ["--direct_num_workers=1", "--direct_running_mode=in_memory"])


def test_wiki_refs_job(tmp_path):
    out = tmp_path / "urls.txt"
    assert _wiki_refs(["--input", str(DUMP), "--output", str(out)]) == 0
    urls = out.read_text().splitlines()
    assert urls == sorted(set(urls))
    card = json.loads((tmp_path / "urls.txt.json").read_text())
    with bz2.open(DUMP, "rt", encoding="utf-8", errors="ignore") as f:
        lines = f.readlines()
    assert card["lines"] == len(lines) and card["distinct_urls"] == len(urls)
    assert set(urls) == {u for line in lines for u in ref_urls(line)}
    # Every URL comes from a line with a bare <ref> and a </ref>.
    ref_lines = [line for line in lines if "&lt;ref&gt" in line and "&lt;/ref&gt;" in line]
    assert all(any(u in line for line in ref_lines) for u in urls[:50])
    assert _wiki_refs(["--input", str(DUMP), "--output", str(out), "--template-urls"]) == 0
    assert set(urls) < set(out.read_text().splitlines())


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


def test_train_quality_on_cited_pages_by_domain(trained, tmp_path, capsys):
    """The reference's positives: pages of the run that Wikipedia cites (here, by domain: the bundled
    dump cites none of the bundled pages' URLs, but some of their domains)."""
    cited = tmp_path / "cited.txt"
    assert _wiki_refs(["--input", str(DUMP), "--output", str(cited), "--template-urls"]) == 0
    domains = {domain_key(u) for u in cited.read_text().splitlines()}
    pages = [r for f in sorted((trained / "unfiltered").glob("*.parquet"))
             for r in pq.read_table(f, columns=["url", "text", "bucket", "language"]).to_pylist()]
    head_middle = [p for p in pages if p["bucket"] in ("head", "middle") and p["language"] == "en"]
    positives = {prepare(p["text"]) for p in head_middle if domain_key(p["url"]) in domains and len(p["text"]) >= 1000}
    assert 1 <= len(positives) < 10
    args = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
    out = tmp_path / "model"
    assert main(["train-quality", "--cited-urls", str(cited), "--match", "domain", "--pages",
                 str(trained / "unfiltered" / "*.parquet"), "--output", str(out), *args]) == 0
    card = json.loads((out / "wiki_vs_cc.bin.json").read_text())
    counts = card["data"]["counts"]
    assert counts["positives_unique"] == len(positives) == counts["per_class"]
    assert counts["negatives_unique"] == len({prepare(p["text"]) for p in head_middle} - positives)
    assert counts["skipped_pages_tail_bucket"] == sum(p["bucket"] == "tail" for p in pages)
    assert set((out / "examples" / "positives.txt").read_text().splitlines()) == positives
    # the URL rule: none of the bundled pages is cited by URL, so there is no positive class
    assert main(["train-quality", "--cited-urls", str(cited), "--pages", str(trained / "unfiltered" / "*.parquet"),
                 "--output", str(tmp_path / "by-url"), *args]) != 0
    assert "needs both classes: 0 distinct positive" in capsys.readouterr().err


def test_quality_step_loads_once_and_not_into_the_pickle(trained):
    step = ScoreQuality(str(trained / "model" / "wiki_vs_cc.bin"))
    assert step.load() is step.load()
    clone = pickle.loads(pickle.dumps(step))
    assert clone._model is None and len(pickle.dumps(step)) < 2000


def test_train_quality_writes_model_and_card(trained):
    card = json.loads((trained / "model" / "wiki_vs_cc.bin.json").read_text())
    with gzip.open(WIKI, "rt") as f:
        long_enough = sum(len(json.loads(line)["text"]) >= MIN_POSITIVE_CHARS for line in f)
    counts = card["data"]["counts"]
    assert counts["skipped_positives_under_1000_chars"] == 8033 - long_enough
    pages = [r for f in sorted((trained / "unfiltered").glob("*.parquet"))
             for r in pq.read_table(f, columns=["text", "bucket", "language"]).to_pylist()]
    negatives = {prepare(p["text"]) for p in pages if p["bucket"] in ("head", "middle") and p["language"] == "en"}
    assert counts["negatives_unique"] == len(negatives)
    assert counts["per_class"] == min(counts["positives_unique"], len(negatives))
    assert card["heldout"]["roc_auc"] >= 0.8
    # RedPajama trained with `fasttext supervised` and no option: fastText's defaults (args.cc), one thread here
    trained_with = card["hyper_parameters"]["trained_with"]
    assert {k: trained_with[k] for k in ("epoch", "lr", "dim", "ws", "wordNgrams", "minCount", "minn", "maxn", "neg", "loss")} == {
        "epoch": 5, "lr": 0.1, "dim": 100, "ws": 5, "wordNgrams": 1, "minCount": 1, "minn": 0, "maxn": 0, "neg": 5, "loss": "softmax"}
    assert trained_with["thread"] == 1 and card["threshold"] == 0.25
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
    docs = metrics["documents"]
    assert docs["scored"] == metrics["positives"] + metrics["negatives"]
    assert docs["read"] == docs["scored"] + docs["skipped_other_language"] + docs["skipped_empty_text"]
