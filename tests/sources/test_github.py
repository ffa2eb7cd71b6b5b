import gzip
import json

import pyarrow as pa
import pytest

from pipeline.sources import github
from tests.sources.conftest import DATA, SAMPLE, apply, read_all


@pytest.mark.parametrize(
    "expr,ok",
    [
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


def test_real_apache_header_is_removed_and_code_kept():
    rec = next(r for r in _sample_records() if r["path"] == "fastwarc-py/setup.py")
    new, removed = github.strip_license_header(rec["content"])
    assert removed and "Licensed under the Apache License" in rec["content"]
    assert "Licensed under" not in new and "Copyright" not in new[:200]
    assert "setup(" in new or "import" in new


def test_docstring_without_license_is_kept():
    rec = next(r for r in _sample_records() if r["path"] == "trafilatura/__init__.py")
    new, removed = github.strip_license_header(rec["content"])
    assert not removed and new == rec["content"]


def test_shebang_kept_when_header_removed():
    text = "#!/usr/bin/env python\n# Copyright 2021 Someone\n# SPDX-License-Identifier: MIT\n\nprint('hi')\n"
    assert github.strip_license_header(text) == ("#!/usr/bin/env python\nprint('hi')\n", True)


def test_code_quality_rules():
    texts = ["x = 1\n" * 10, "a" * 1001, ("y" * 150 + "\n") * 3, "{}[]();;,,..::\n" * 5]
    batch = pa.RecordBatch.from_pydict({"text": texts})
    out, stats = github.CodeQuality()(batch)
    assert out.column("text").to_pylist() == [texts[0]]
    assert dict(stats.dropped) == {"long_line": 1, "long_mean_line": 1, "low_alnum": 1}


def test_jsonl_job_steps_drop_lgpl_and_duplicates():
    config = github.GitHubConfig()
    batches, stats, dead = read_all(github, SAMPLE / "github" / "github-sample.jsonl.gz", config)
    kept_licenses = set()
    for b in batches:
        out, _ = apply(config.before(), b)
        kept_licenses |= set(out.column("_license").to_pylist())
    assert "LGPL-2.1-only" not in kept_licenses and "MIT OR Apache-2.0" in kept_licenses


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
