import gzip
import json

import pyarrow as pa
import pytest

from pipeline.sources import github
from tests.sources.conftest import DATA, SAMPLE, read_all, run_source


@pytest.mark.parametrize(
    "expr,ok",
    [
        # BigQuery github_repos.licenses keys, lowercase: RedPajama's query keeps mit%, bsd%, apache%
        ("mit", True), ("apache-2.0", True), ("bsd-3-clause", True), ("bsd-2-clause", True),
        ("gpl-2.0", False), ("lgpl-3.0", False), ("isc", False), ("mpl-2.0", False), ("unlicense", False),
        # SPDX ids and expressions (repository folders, the shared corpus)
        ("MIT", True), ("Apache-2.0", True), ("BSD-3-Clause", True), ("MIT OR Apache-2.0", True),
        ("LGPL-2.1-only", False), ("GPL-3.0-or-later OR MIT", True), ("MIT AND GPL-2.0-only", False),
        ("(MIT OR GPL-2.0) AND Apache-2.0", True), ("", False), ("unknown", False),
        ("Apache-2.0 WITH LLVM-exception", True),
    ],
)
def test_license_expressions(expr, ok):
    assert github.license_allowed(expr, github.ALLOWED) is ok


def _sample_records():
    with gzip.open(SAMPLE / "github" / "github-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_leading_comment_lines_are_removed_as_redpajama_does():
    rec = next(r for r in _sample_records() if r["path"] == "fastwarc-py/setup.py")
    assert "/*" not in rec["content"] and rec["content"].startswith("# Copyright")
    new, removed = github.strip_license_header(rec["content"])
    assert removed and "Licensed under" not in new and "Copyright" not in new
    first_code = next(line for line in rec["content"].split("\n") if line and not line.startswith("#"))
    assert new.startswith(first_code)  # everything up to the first line that is not a comment or empty


def test_copyright_block_comment_is_cut():
    rec = next(r for r in _sample_records() if r["path"] == "Readability-readerable.js")
    content = rec["content"]
    end = content.index("*/") + 2
    assert content.startswith("/*") and "Copyright" in content[:end]
    assert github.strip_license_header(content) == (content[end:], True)


def test_docstring_and_block_without_copyright_are_kept():
    rec = next(r for r in _sample_records() if r["path"] == "trafilatura/__init__.py")
    assert github.strip_license_header(rec["content"]) == (rec["content"], False)
    text = "/* helper macros */\n// Copyright 2020 A\nint x;\n"  # a block without 'copyright' stops the rule
    assert github.strip_license_header(text) == (text, False)


def _quality(texts, paths, **kw):
    batch = pa.RecordBatch.from_pydict({"text": texts, "_path": paths})
    return github.CodeQuality(**kw)(batch)


def test_code_quality_rules():
    texts = ["x = 1\n" * 10, "a" * 1001, ("y" * 150 + "\n") * 3, "{}[]();;,,..::\n" * 5, "x = 1\n", ""]
    paths = ["a.py", "b.py", "c.js", "d.c", "e.toml", "f.py"]
    out, stats = _quality(texts, paths)
    assert out.column("text").to_pylist() == [texts[0]]
    assert dict(stats.dropped) == {"long_line": 1, "long_mean_line": 1, "low_alnum": 1, "extension": 1, "empty": 1}


def test_extension_whitelist_on_the_sample():
    recs = _sample_records()
    out, stats = _quality([r["content"] for r in recs], [r["path"] for r in recs], max_line_length=10**9,
                          max_mean_line_length=1e9, min_alnum_fraction=0)
    # of the sample's suffixes .py .js .sh .c .rs .ts are on RedPajama's list; .cu .toml .pxd .cfg .pyx are not
    off = [r for r in recs if r["path"].rsplit(".", 1)[-1] in ("cu", "toml", "pxd", "cfg", "pyx")]
    assert len(off) > 0 and stats.dropped["extension"] == len(off)


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    """A 4000-piece BPE model trained on the sample's code, the file the test scores left out."""
    import sentencepiece

    texts = [r["content"] for r in _sample_records() if r["path"] != "fastwarc-py/setup.py"]
    prefix = tmp_path_factory.mktemp("spm") / "code"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(prefix), vocab_size=4000, model_type="bpe",
        character_coverage=1.0, num_threads=1, minloglevel=2, max_sentence_length=100000,
    )
    return str(prefix) + ".model"


def test_alpha_per_token_rule(sentencepiece_model):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=sentencepiece_model)
    code = next(r for r in _sample_records() if r["path"] == "fastwarc-py/setup.py")["content"]
    table = "\n".join(" ".join(f"{b:#04x}," for b in range(i, i + 12)) for i in range(0, 240, 12))  # a byte table
    ratio = {t: sum(c.isalpha() for c in t) / len(sp.encode(t)) for t in (code, table)}
    assert ratio[code] >= 1.5 > ratio[table]
    out, stats = _quality([code, table], ["setup.py", "table.c"], tokenizer_model=sentencepiece_model)
    assert out.column("text").to_pylist() == [code] and dict(stats.dropped) == {"low_alpha_per_token": 1}
    out, stats = _quality([code, table], ["setup.py", "table.c"])  # no tokenizer: the rule is off
    assert out.num_rows == 2


def test_job_drops_lgpl_and_exact_duplicates_of_the_raw_content(tmp_path):
    from collections import Counter

    table, stats, dead = run_source("github", [SAMPLE / "github" / "github-sample.jsonl.gz"], github.GitHubConfig(), tmp_path)
    recs = _sample_records()
    allowed = [r for r in recs if r["license"] != "LGPL-2.1-only"]
    copies = Counter(r["content"] for r in allowed)
    dropped = stats["dropped"]
    assert dropped["license"] == len(recs) - len(allowed) == 25
    # one file per distinct raw content stays; the later copies (by input order) go
    assert dropped["duplicate_file"] == sum(n - 1 for n in copies.values()) > 0
    firsts = {}
    for r in allowed:
        firsts.setdefault(r["content"], f"{r['repo_name']}/{r['path']}")
    kept_ids = {json.loads(m)["repo_name"] + "/" + json.loads(m)["path"] for m in table.column("metadata").to_pylist()}
    later = {f"{r['repo_name']}/{r['path']}" for r in allowed} - set(firsts.values())
    assert kept_ids <= set(firsts.values()) and not (kept_ids & later)
    assert stats["read"] == stats["kept"] + sum(dropped.values()) and not dead


def test_repository_directory_license_detected(tmp_path):
    config = github.GitHubConfig()
    batches, stats, dead = read_all(github, DATA / "repos" / "nanoGPT", config)
    rows = [r for b in batches for r in b.to_pylist()]
    assert {r["_license"] for r in rows} == {"MIT"}
    assert sorted(json.loads(r["metadata"])["path"] for r in rows) == ["LICENSE", "config/eval_gpt2.py", "config/eval_gpt2_large.py", "configurator.py"]
    batches, _, _ = read_all(github, DATA / "repos" / "gensim", config)
    assert {r["_license"] for b in batches for r in b.to_pylist()} == {"GPL-family"}


def test_directory_binary_and_malformed_jsonl(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "blob.bin").write_bytes(b"\x00\x01\x02")
    batches, stats, _ = read_all(github, tmp_path / "repo", github.GitHubConfig())
    assert stats.dropped["binary"] == 1 and not batches
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"repo_name": "a/b", "path": "x.py"}\n')
    _, stats, dead = read_all(github, bad, github.GitHubConfig())
    assert stats.dropped["malformed_record"] == 1 and dead[0]["file"] == str(bad) and dead[0]["record"] == 0
