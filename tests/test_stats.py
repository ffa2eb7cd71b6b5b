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
import math
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
from beam_jobs.cli import main as cli_main
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
    # Most important first: the web pipeline, the mix, the sources (wikipedia by its folder name), the rest.
    assert [j["name"] for j in report["jobs"]] == ["ccnet", "mix", "wikipedia", "quality"]


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


# ---------------------------------------------------------------------------------------------------
# A whole run: the report opens with the run at a glance


GITHUB_DOCS = os.path.join(REPO, "tests", "data", "tokenizer", "github.jsonl.gz")
MIX_SHARES = "commoncrawl=60,wikipedia=35,github=5"
MIX_TARGETS = {"commoncrawl": 0.60, "wikipedia": 0.35, "github": 0.05}
MIX_TOKENS = 2_000_000


def github_rows() -> list[dict]:
    """Real GitHub files (tests/data/tokenizer/README.md): a source without a language field."""
    with gzip.open(GITHUB_DOCS, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    return [{"id": document_id("github", r["native_id"]), "source": "github", "url": r["url"], "text": r["text"]} for r in recs if r["text"]]


def byte_token_folder(folder, texts_by_source: dict[str, list[str]]) -> dict[str, int]:
    """Per-source token shards as `corpusmill tokenize` lays them out (shards named by source, no targets)."""
    os.makedirs(folder, exist_ok=True)
    shards, sources = [], {}
    for name, texts in texts_by_source.items():
        shard = write_token_shard(folder, f"{name}-00000", [byte_tokens(t) for t in texts], [SOURCE_NAMES.index(name)] * len(texts))
        shards.append({**shard, "source": name})
        sources[name] = {"documents": shard["documents"], "tokens": shard["tokens"], "epochs": 1.0, "share": 0.0, "target": None}
    manifest = {
        "format": "megatron-mmidx-v1", "dtype": "uint16",
        "tokenizer": {"path": "bytes+3", "sha256": "", "vocab_size": 259, "bos_id": 1, "eos_id": 2},
        "source_names": SOURCE_NAMES, "shards": shards, "sources": sources,
        "total": {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards)},
    }  # fmt: skip
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return {name: s["tokens"] for name, s in sources.items()}


TRAIN_STEPS, EVAL_INTERVAL = 6, 3


@pytest.fixture(scope="session")
def full_run(ccnet_dir, wiki_dir, tmp_path_factory):
    """A run folder of real job outputs: ccnet, wikipedia and github documents, their token shards,
    a real `corpusmill mix` (wikipedia repeated about 4.6 times), and a real `corpusmill train`."""
    from pipeline.accounting import JobStats, StageStats

    run = tmp_path_factory.mktemp("fullrun")
    shutil.copytree(ccnet_dir, run / "ccnet")
    shutil.copytree(wiki_dir, run / "wikipedia")
    gh = github_rows()
    (run / "github").mkdir()
    pq.write_table(to_document_table(pa.Table.from_pylist(gh)), run / "github" / "part-00000.parquet")
    (run / "github" / "stats.json").write_text(JobStats("github", [StageStats("read", docs_in=len(gh), docs_out=len(gh))]).to_json())
    texts = {
        "commoncrawl": [r["text"] for part in plain_rows(ccnet_dir).values() for r in part],
        "github": [r["text"] for r in gh],
        "wikipedia": [r["text"] for r in wiki_rows()],
    }
    sizes = byte_token_folder(run / "tokens", texts)
    # Planned epochs = share x tokens / source size: wikipedia's are well past 2.5, the others' well below.
    total = MIX_TOKENS
    epochs = {s: MIX_TARGETS[s] * total / sizes[s] for s in MIX_TARGETS}
    assert epochs["wikipedia"] > 3 and epochs["commoncrawl"] < 2 and epochs["github"] < 2, epochs
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["mix", "--input", str(run / "tokens"), "--output", str(run / "mix"), "--tokens", str(total),
                         "--shares", MIX_SHARES, "--tolerance", "0.02", "--direct_num_workers=1"]) == 0  # fmt: skip
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model gains nothing from intra-op threads (see tests/conftest.py torch_one_thread)
        assert cli_main(["train", "--config", os.path.join(REPO, "configs", "train", "tiny.yaml"), "--data", str(run / "mix" / "manifest.json"),
                         "--output", str(run / "train"), "--max-steps", str(TRAIN_STEPS), "--device", "cpu",
                         "--set", "data.seq_len=64", "--set", "data.val_tokens=2048", "--set", "training.batch_tokens=512",
                         "--set", "training.micro_batch_size=8", "--set", "logging.interval=1", "--set", f"logging.eval_interval={EVAL_INTERVAL}",
                         "--set", "logging.eval_batches=2", "--set", "logging.tensorboard=false", "--set", "checkpoint.interval=0"]) == 0  # fmt: skip
        torch.set_num_threads(threads)
    return run, sizes, total


def test_run_report_opens_with_every_jobs_funnel_the_sources_and_the_trainer(full_run):
    run, sizes, total = full_run
    report = compute_report(str(run), use_beam=False)
    assert report["problems"] == []
    # Jobs, most important first (not alphabetical): web pipeline, mix, sources in the mix's order, token shards, trainer.
    assert [j["name"] for j in report["jobs"]] == ["ccnet", "mix", "github", "wikipedia", "tokens", "train"]
    overview = report["overview"]

    # One funnel row per job with a stats.json, in the same order, read -> kept and the top drop reasons.
    rows = overview["funnel"]
    assert [r["name"] for r in rows] == ["ccnet", "mix", "github"]
    for r in rows:
        stats = json.load(open(run / r["name"] / "stats.json"))
        assert (r["read"], r["kept"], r["dropped"]) == (stats["read"], stats["kept"], sum(stats["dropped"].values()))
        assert r["read"] == r["kept"] + r["dropped"]
        top = sorted(stats["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert r["top_dropped"] == [list(x) for x in top]
    assert rows[0]["top_dropped"]  # ccnet drops something (the sample has duplicates and short pages)

    # Tokens per source and the mix against its target.
    mix = json.load(open(run / "mix" / "manifest.json"))
    by_source = {r["source"]: r for r in overview["sources"]}
    assert [r["source"] for r in overview["sources"]] == ["commoncrawl", "github", "wikipedia"]
    kept = {"commoncrawl": sum(len(p) for p in plain_rows(run / "ccnet").values()), "github": len(github_rows()), "wikipedia": 300}
    for s, r in by_source.items():
        assert r["docs"] == kept[s]
        assert r["tokens"] == sizes[s]  # bytes + BOS/EOS of every document
        assert r["mix_tokens"] == mix["sources"][s]["tokens"]
        assert r["achieved"] == pytest.approx(mix["sources"][s]["tokens"] / mix["total"]["tokens"])
        assert r["target"] == pytest.approx(MIX_TARGETS[s])
        assert r["epochs"] == pytest.approx(r["mix_tokens"] / sizes[s])
        assert r["epochs"] == pytest.approx(MIX_TARGETS[s] * total / sizes[s], rel=0.05)  # whole documents: close to the plan
    assert [(s, r["repeated"]) for s, r in by_source.items()] == [("commoncrawl", False), ("github", False), ("wikipedia", True)]
    assert [w["source"] for w in overview["repeats"]] == ["wikipedia"]

    # The trainer's curves: one training point per step, validation every EVAL_INTERVAL steps (and at the end).
    (train,) = overview["training"]
    assert [s for s, _ in train["loss"]] == list(range(1, TRAIN_STEPS + 1))
    assert [s for s, _ in train["val_loss"]] == list(range(EVAL_INTERVAL, TRAIN_STEPS + 1, EVAL_INTERVAL))
    assert train["summary"]["steps"] == TRAIN_STEPS and train["summary"]["tokens"] == TRAIN_STEPS * 512
    assert all(math.isfinite(v) and v > 0 for _, v in train["loss"] + train["val_loss"])


class _Sections(HTMLParser):
    """The page's sections in order: (id, its h2 text, captions, image names)."""

    def __init__(self):
        super().__init__()
        self.sections, self._in = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append({"id": attrs.get("id"), "h2": "", "captions": [], "images": []})
        elif tag in ("h2", "caption") and self.sections:
            self._in = tag
        elif tag == "img" and self.sections:
            self.sections[-1]["images"].append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "h2" and not self.sections[-1]["h2"]:
            self.sections[-1]["h2"] = data.strip()
        elif self._in == "caption":
            self.sections[-1]["captions"].append(data.strip())


def test_html_report_starts_with_the_run_and_leaves_out_empty_plots(full_run, tmp_path, capsys):
    run, _, _ = full_run
    out = tmp_path / "html"
    assert cli_main(["stats", str(run), "--html", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.index("the run at a glance") < printed.index("Funnel (stats.json)")  # the terminal too
    assert "repeated data: wikipedia is repeated" in printed
    page = (out / "index.html").read_text(encoding="utf-8")
    parser = _Sections()
    parser.feed(page)
    sections = parser.sections
    assert sections[0]["id"] == "overview" and sections[0]["h2"] == "The run at a glance"
    assert sections[0]["captions"][:2] == ["Every job's funnel (stats.json)", "Tokens per source and the mix against its target"]
    assert sections[0]["images"] == ["00-run-mix-mix.png", "00-run-train-training.png"]
    assert "repeated data:</b> wikipedia is repeated" in page.split("</section>")[0]
    assert [s["h2"] for s in sections[1:]] == ["ccnet", "mix", "github", "wikipedia", "tokens", "train"]
    jobs = {s["h2"]: s for s in sections[1:]}
    # ccnet has many languages; github has no language field, wikipedia one language: no histogram for them.
    assert any(i.endswith("-languages.png") for i in jobs["ccnet"]["images"]) and "Languages" in jobs["ccnet"]["captions"]
    assert not any(i.endswith("-languages.png") for i in jobs["github"]["images"]) and "Languages" not in jobs["github"]["captions"]
    assert not any(i.endswith("-languages.png") for i in jobs["wikipedia"]["images"])
    # Unscored documents have no perplexity or quality plot, per-source shards without targets no mix plot.
    assert [i.rsplit("-", 1)[1] for i in jobs["github"]["images"]] == ["lengths.png"]  # nothing dropped: no funnel plot either
    assert [i.rsplit("-", 1)[1] for i in jobs["tokens"]["images"]] == ["lengths.png"]
    # The curves and the mix plot are drawn once, at the top; the mix's funnel only if it left documents out.
    mix_dropped = sum(json.load(open(run / "mix" / "stats.json"))["dropped"].values())
    assert jobs["train"]["images"] == [] and jobs["mix"]["images"] == ["02-mix-funnel.png"] * (mix_dropped > 0) + ["02-mix-lengths.png"]
    for s in sections:
        for img in s["images"]:
            assert (out / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trainer_metrics_a_resumed_step_replaces_the_earlier_and_a_torn_line_is_named(full_run, tmp_path, capsys):
    run, _, _ = full_run
    train = tmp_path / "train"
    shutil.copytree(run / "train", train)
    lines = (train / "metrics.jsonl").read_text().splitlines()
    # A resumed run logs step 5 again (appended), then is killed mid-line.
    with open(train / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.25, "lr": 1e-3, "grad_norm": 0.5, "tokens_per_s": 100.0, "memory_gib": 0.1}) + "\n")
        f.write('{"step": 6, "lo')
    report = compute_report(str(train), use_beam=False)
    assert report["kind"] == "train"
    assert [os.path.basename(p["file"]) for p in report["problems"]] == ["metrics.jsonl"]
    assert f"line {len(lines) + 2}:" in report["problems"][0]["error"]
    loss = dict(report["training"]["loss"])
    assert sorted(loss) == list(range(1, TRAIN_STEPS + 1)) and loss[5] == 1.25
    assert cli_main(["stats", str(train)]) == 1
    assert "metrics.jsonl" in capsys.readouterr().err
