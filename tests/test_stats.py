"""`corpusmill stats`: numbers against an independent count, bad shards, token shards, HTML.

Inputs are made from the bundled sample only: a real ccnet run over data/sample/commoncrawl, documents
from data/sample/wikipedia/summaries-en.jsonl.gz, and token shards written here in the layout of
docs/token-shards.md (byte-level tokens of those real texts: token = byte + 3, BOS 1, EOS 2).
The independent counts read rows as Python objects and count with plain Python (no pyarrow.compute,
no numpy), so they share no code with `reporting/shard_stats.py`.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import struct
from collections import Counter
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reporting.command import compute_report
from reporting import shard_stats
from pipeline.cli import main as cli_main
from pipeline.schema import document_id, to_document_table
from reporting.render import render_terminal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_WARCS = os.path.join(REPO, "data", "sample", "commoncrawl", "*.warc.gz")
SAMPLE_WIKI = os.path.join(REPO, "data", "sample", "wikipedia", "summaries-en.jsonl.gz")
LENGTH_TOLERANCE = 2 ** (1 / 32)  # half a length bin (16 per octave): the median is the bin's geometric middle
PPL_TOLERANCE = 10 ** (shard_stats.PPL_BIN_WIDTH / 2)


# ---------------------------------------------------------------------------------------------------
# Inputs


@pytest.fixture(scope="session")
def ccnet_dir(tmp_path_factory, lid_model, lm_dir):
    """A real ccnet run on the bundled sample, every language and bucket kept (models: tests/conftest.py)."""
    out = str(tmp_path_factory.mktemp("run") / "ccnet")
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli_main(["ccnet", "--input", SAMPLE_WARCS, "--output", out, "--languages", "all", "--lid-model", lid_model,
                       "--lm-dir", lm_dir, "--no-quality", "--keep-buckets", "head,middle,tail", "--direct_num_workers=1"])  # fmt: skip
    assert rc == 0
    return out


def wiki_rows(n: int = 300) -> list[dict]:
    rows = []
    with gzip.open(SAMPLE_WIKI, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            url = "https://en.wikipedia.org/wiki/" + rec["title"].replace(" ", "_")
            rows.append({"id": document_id("wikipedia", url), "source": "wikipedia", "url": url, "text": rec["text"], "language": rec["lang"]})
            if len(rows) == n:
                break
    return rows


@pytest.fixture(scope="session")
def wiki_dir(tmp_path_factory):
    """Wikipedia documents (no scores) in two shards, no stats.json."""
    out = tmp_path_factory.mktemp("wiki")
    rows = wiki_rows()
    for i, part in enumerate((rows[:200], rows[200:])):
        table = to_document_table(pa.Table.from_pylist(part))
        pq.write_table(table, out / f"part-{i:05d}.parquet", row_group_size=64)
    return str(out)


@pytest.fixture(scope="session")
def quality_dir(ccnet_dir, tmp_path_factory):
    """The ccnet shards with quality_score filled from language_score (a real probability in [0, 1],
    standing in for the classifier's) so that the quality histogram is exercised on real values."""
    out = tmp_path_factory.mktemp("quality")
    for name in sorted(os.listdir(ccnet_dir)):
        if name.endswith(".parquet"):
            t = pq.read_table(os.path.join(ccnet_dir, name))
            t = t.set_column(t.schema.get_field_index("quality_score"), "quality_score", t.column("language_score"))
            pq.write_table(t, out / name, row_group_size=16)
    return str(out)


def byte_tokens(text: str) -> list[int]:
    return [1] + [b + 3 for b in text.encode("utf-8")] + [2]


def write_token_shard(folder, prefix: str, docs: list[list[int]], src: list[int] | None) -> dict:
    """One shard exactly as docs/token-shards.md describes it."""
    sizes = [len(d) for d in docs]
    with open(os.path.join(folder, prefix + ".bin"), "wb") as f:
        for d in docs:
            f.write(struct.pack(f"<{len(d)}H", *d))
    offsets, pos = [], 0
    for s in sizes:
        offsets.append(pos)
        pos += 2 * s
    n = len(docs)
    with open(os.path.join(folder, prefix + ".idx"), "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 8) + struct.pack("<Q", n) + struct.pack("<Q", n + 1))
        f.write(struct.pack(f"<{n}i", *sizes))
        f.write(struct.pack(f"<{n}q", *offsets))
        f.write(struct.pack(f"<{n + 1}q", *range(n + 1)))
    if src is not None:
        with open(os.path.join(folder, prefix + ".src"), "wb") as f:
            f.write(bytes(src))
    return {"prefix": prefix, "documents": n, "tokens": sum(sizes)}


SOURCE_NAMES = ["commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange"]
TARGETS = {"commoncrawl": 0.67, "c4": 0.15, "github": 0.045, "wikipedia": 0.045, "books": 0.045, "arxiv": 0.025, "stackexchange": 0.02}


@pytest.fixture(scope="session")
def mix_dir(tmp_path_factory):
    """Two mixed token shards of wikipedia (source 3) and ccnet-like commoncrawl text (source 0)."""
    out = tmp_path_factory.mktemp("mix")
    texts = [r["text"] for r in wiki_rows(120)]
    # Alternate sources over real texts: even documents are attributed to commoncrawl, odd to wikipedia.
    docs = [byte_tokens(t) for t in texts]
    src = [0 if i % 2 == 0 else 3 for i in range(len(docs))]
    shards = [write_token_shard(out, "mixed-00000", docs[:70], src[:70]), write_token_shard(out, "mixed-00001", docs[70:], src[70:])]
    per_source = {}
    for d, s in zip(docs, src):
        e = per_source.setdefault(SOURCE_NAMES[s], {"documents": 0, "tokens": 0})
        e["documents"] += 1
        e["tokens"] += len(d)
    total = sum(e["tokens"] for e in per_source.values())
    manifest = {
        "format": "megatron-mmidx-v1", "dtype": "uint16",
        "tokenizer": {"path": "bytes+3", "sha256": "", "vocab_size": 259, "bos_id": 1, "eos_id": 2},
        "source_names": SOURCE_NAMES, "shards": shards,
        "sources": {s: {**e, "epochs": 1.5 if s == "wikipedia" else 1.0, "share": e["tokens"] / total, "target": TARGETS[s]} for s, e in per_source.items()},
        "total": {"documents": len(docs), "tokens": total},
    }  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    return str(out)


# ---------------------------------------------------------------------------------------------------
# Independent counts


def plain_rows(folder: str) -> dict[str, list[dict]]:
    return {n: pq.read_table(os.path.join(folder, n)).to_pylist() for n in sorted(os.listdir(folder)) if n.endswith(".parquet")}


def lower_median(values):
    values = sorted(values)
    return values[(len(values) - 1) // 2]


def domain_of(url):
    if not url:
        return None
    host = (urlsplit(url).hostname or "").lower()
    host = host[4:] if host.startswith("www.") else host
    return host or None


def assert_close_ratio(estimate, exact, tolerance):
    assert exact / tolerance * 0.9999 <= estimate <= exact * tolerance * 1.0001, (estimate, exact)


def test_document_numbers_match_an_independent_count(ccnet_dir):
    report = compute_report(ccnet_dir, use_beam=False)
    shards = plain_rows(ccnet_dir)
    rows = [r for part in shards.values() for r in part]
    total = report["total"]
    assert report["kind"] == "documents" and report["problems"] == []
    assert total["docs"] == len(rows) > 50
    assert total["bytes"] == sum(len(r["text"].encode("utf-8")) for r in rows)
    assert total["chars"] == sum(len(r["text"]) for r in rows)
    assert total["mean_length"] == pytest.approx(total["chars"] / len(rows))
    assert_close_ratio(total["median_length"], lower_median(len(r["text"]) for r in rows), LENGTH_TOLERANCE)

    # per shard
    assert [s["name"] for s in report["shards"]] == list(shards)
    for s in report["shards"]:
        part = shards[s["name"]]
        assert s["docs"] == len(part)
        assert s["bytes"] == sum(len(r["text"].encode()) for r in part)
        assert s["file_bytes"] == os.path.getsize(os.path.join(ccnet_dir, s["name"]))
        assert_close_ratio(s["median_length"], lower_median(len(r["text"]) for r in part), LENGTH_TOLERANCE)

    # languages, with mean score
    langs = Counter(r["language"] for r in rows)
    assert len(langs) > 3
    got = {x["language"]: x for x in total["languages"]}
    assert {k: v["docs"] for k, v in got.items()} == dict(langs)
    for lang, n in langs.items():
        scores = [r["language_score"] for r in rows if r["language"] == lang]
        assert got[lang]["mean_score"] == pytest.approx(sum(scores) / n, abs=1e-6)

    # perplexity and buckets
    ppl = [r["perplexity"] for r in rows if r["perplexity"] is not None]
    assert total["perplexity"]["scored"] == len(ppl) > 10
    assert total["perplexity"]["unscored"] == len(rows) - len(ppl)
    assert_close_ratio(total["perplexity"]["median"], lower_median(ppl), PPL_TOLERANCE)
    buckets = Counter(r["bucket"] or shard_stats.NO_BUCKET for r in rows)
    assert {b: v["docs"] for b, v in total["buckets"].items()} == dict(buckets)
    assert set(buckets) >= {"head", "middle", "tail"}
    for b, v in total["buckets"].items():
        assert v["chars"] == sum(len(r["text"]) for r in rows if (r["bucket"] or shard_stats.NO_BUCKET) == b)

    # domains: exact, ranked by count then name
    domains = Counter(d for d in (domain_of(r["url"]) for r in rows) if d)
    ranked = sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))
    assert total["domains"]["top"] == [list(x) for x in ranked[: len(total["domains"]["top"])]]
    assert total["domains"]["distinct"] == len(domains) and total["domains"]["exact"]

    # the funnel is stats.json's
    stats = json.load(open(os.path.join(ccnet_dir, "stats.json")))
    assert [s["name"] for s in report["funnel"]["stages"]] == [s["name"] for s in stats["stages"]]
    assert [(s["docs_in"], s["kept"], s["dropped"]) for s in report["funnel"]["stages"]] == [(s["docs_in"], s["docs_out"], s["dropped"]) for s in stats["stages"]]
    assert report["funnel"]["kept"] == total["docs"]


def test_quality_histogram_matches_an_independent_count(quality_dir):
    report = compute_report(quality_dir, use_beam=False)
    rows = [r for part in plain_rows(quality_dir).values() for r in part]
    q = [r["quality_score"] for r in rows]
    hist = [0] * shard_stats.QUALITY_NBINS
    for x in q:
        hist[min(int(x * shard_stats.QUALITY_NBINS), shard_stats.QUALITY_NBINS - 1)] += 1
    assert report["total"]["quality"]["hist"]["counts"] == hist
    assert report["total"]["quality"]["mean"] == pytest.approx(sum(q) / len(q), abs=1e-6)
    assert report["funnel"] is None  # no stats.json in this folder


def test_batches_and_merge_order_do_not_change_the_summary(quality_dir):
    path = os.path.join(quality_dir, "part-00000.parquet")
    whole = shard_stats.summarise_document_shard(path).total().to_state()
    small = shard_stats.summarise_document_shard(path, batch_rows=7).total().to_state()
    assert whole == small
    a, b = (shard_stats.summarise_document_shard(os.path.join(quality_dir, n)) for n in ("part-00000.parquet", "part-00001.parquet"))
    ab = shard_stats.FolderAccumulator().add(a).add(b)
    ba = shard_stats.FolderAccumulator().add(b).add(a)
    assert json.dumps(ab.to_state(), sort_keys=True) == json.dumps(ba.to_state(), sort_keys=True)
    state = ab.to_state()
    assert shard_stats.FolderAccumulator.from_state(json.loads(json.dumps(state))).to_state() == state


def test_corrupt_and_foreign_parquet_are_named_and_the_rest_is_summarised(wiki_dir, tmp_path, capsys):
    folder = tmp_path / "docs"
    shutil.copytree(wiki_dir, folder)
    good = compute_report(wiki_dir, use_beam=False)
    data = (folder / "part-00001.parquet").read_bytes()
    (folder / "part-00002.parquet").write_bytes(data[: len(data) // 2])  # truncated: footer gone
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / "part-00003.parquet")  # foreign schema
    (folder / "part-00004.parquet").write_bytes(b"not parquet at all\n")
    rc = cli_main(["stats", str(folder), "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert rc == 1
    named = {os.path.basename(p["file"]): p["error"] for p in report["problems"]}
    assert set(named) == {"part-00002.parquet", "part-00003.parquet", "part-00004.parquet"}
    assert "missing column" in named["part-00003.parquet"]
    for name in named:
        assert name in captured.err
    assert report["total"]["docs"] == good["total"]["docs"] == 300
    assert report["total"]["bytes"] == good["total"]["bytes"]
    assert [s["name"] for s in report["shards"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert report["sources"].keys() == {"wikipedia"}


def test_token_shards_mix_and_epochs(mix_dir, tmp_path):
    report = compute_report(mix_dir, use_beam=False)
    assert report["kind"] == "tokens" and report["problems"] == [] and report["warnings"] == []
    texts = [r["text"] for r in wiki_rows(120)]
    tokens = {"commoncrawl": 0, "wikipedia": 0}
    docs = {"commoncrawl": 0, "wikipedia": 0}
    lengths = []
    for i, t in enumerate(texts):
        s = "commoncrawl" if i % 2 == 0 else "wikipedia"
        n = len(t.encode("utf-8")) + 2
        tokens[s] += n
        docs[s] += 1
        lengths.append(n)
    total = sum(tokens.values())
    assert report["total"]["tokens"] == total and report["total"]["docs"] == 120
    assert report["total"]["bytes"] == 2 * total
    assert_close_ratio(report["total"]["median_length"], lower_median(lengths), LENGTH_TOLERANCE)
    rows = {r["source"]: r for r in report["mix"]["sources"]}
    assert set(rows) == {"commoncrawl", "wikipedia"}
    for s in rows:
        assert rows[s]["tokens"] == tokens[s] and rows[s]["docs"] == docs[s]
        assert rows[s]["achieved"] == pytest.approx(tokens[s] / total)
        assert rows[s]["target"] == TARGETS[s]
    assert rows["wikipedia"]["epochs"] == 1.5
    assert [s["docs"] for s in report["shards"]] == [70, 50]

    # a manifest that disagrees with the files is a warning; a broken index is a named problem
    bad = tmp_path / "mix"
    shutil.copytree(mix_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["shards"][0]["tokens"] += 1
    (bad / "manifest.json").write_text(json.dumps(manifest))
    idx = (bad / "mixed-00001.idx").read_bytes()
    (bad / "mixed-00001.idx").write_bytes(idx[:-8])
    report = compute_report(str(bad), use_beam=False)
    assert [os.path.basename(p["file"]) for p in report["problems"]] == ["mixed-00001"]
    assert "index size" in report["problems"][0]["error"]
    assert any("mixed-00000" in w["error"] for w in report["warnings"])
    assert report["total"]["docs"] == 70


def test_single_source_token_shards_without_src(tmp_path):
    texts = [r["text"] for r in wiki_rows(30)]
    shard = write_token_shard(tmp_path, "wikipedia-00000", [byte_tokens(t) for t in texts], None)
    manifest = {"format": "megatron-mmidx-v1", "dtype": "uint16", "source_names": ["wikipedia"], "shards": [shard],
                "sources": {"wikipedia": {"documents": 30, "tokens": shard["tokens"]}}, "total": {"documents": 30, "tokens": shard["tokens"]}}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    report = compute_report(str(tmp_path), use_beam=False)
    assert report["sources"]["wikipedia"]["tokens"] == sum(len(t.encode()) + 2 for t in texts)
    assert report["warnings"] == [] and report["problems"] == []


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_run_folder_html_report(ccnet_dir, quality_dir, wiki_dir, mix_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name, src in (("ccnet", ccnet_dir), ("quality", quality_dir), ("wikipedia", wiki_dir), ("mix", mix_dir)):
        shutil.copytree(src, run / name)
    (run / "notes").mkdir()  # not a job output: ignored
    out = tmp_path / "html"
    assert cli_main(["stats", str(run), "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    index = out / "index.html"
    assert f"HTML report: {index}" in printed
    assert "Funnel" in printed and "Mix against target" in printed and "debian.org" in printed
    page = index.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    sources = [img["src"] for img in checker.images]
    for src in sources:
        assert "/" not in src and not src.startswith(("http", "data:"))
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert img_alt(checker, src)
    kinds = {src.rsplit("-", 1)[1] for src in sources}
    assert kinds == {"funnel.png", "languages.png", "perplexity.png", "quality.png", "mix.png", "lengths.png"}
    assert sorted(os.listdir(out)) == sorted(sources + ["index.html"])
    report = compute_report(str(run), use_beam=False)
    assert [j["name"] for j in report["jobs"]] == ["ccnet", "mix", "quality", "wikipedia"]


def img_alt(checker, src):
    return next(img.get("alt") for img in checker.images if img["src"] == src)


def test_beam_gives_the_in_process_report(ccnet_dir, wiki_dir, mix_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name, src in (("ccnet", ccnet_dir), ("wikipedia", wiki_dir), ("mix", mix_dir)):
        shutil.copytree(src, run / name)
    local = compute_report(str(run), use_beam=False)
    beam = compute_report(str(run), use_beam=True, beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert json.dumps(beam, sort_keys=True) == json.dumps(local, sort_keys=True)


def test_terminal_tables_render(wiki_dir):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140)
    render_terminal(compute_report(wiki_dir, use_beam=False), console)
    text = console.file.getvalue()
    assert "wikipedia" in text and "en.wikipedia.org" in text and "300" in text


def test_not_an_output_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["stats", str(tmp_path / "empty")]) == 2
    assert "holds no job output" in capsys.readouterr().err


def test_tokens_of_document_shards_with_a_tokenizer(ccnet_dir, lm_dir, tmp_path):
    import sentencepiece as spm

    model = os.path.join(lm_dir, "en.sp.model")
    report = compute_report(ccnet_dir, tokenizer=model, use_beam=False)
    sp = spm.SentencePieceProcessor(model_file=model)
    shards = plain_rows(ccnet_dir)
    expected = {name: sum(len(sp.encode(r["text"])) for r in rows) for name, rows in shards.items()}
    assert {s["name"]: s["tokens"] for s in report["shards"]} == expected
    assert report["total"]["tokens"] == sum(expected.values()) > 0
    assert compute_report(ccnet_dir, use_beam=False)["total"]["tokens"] is None  # no tokenizer known
