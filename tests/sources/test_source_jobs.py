"""End to end: `corpusmill source SOURCE` on Beam over each bundled sample, checked against the
in-process executor, plus worker-count independence and resume for the two global dedups."""
import glob
import json
import os

import pyarrow.parquet as pq
import pytest

from pipeline import sources
from tests.jobs import run_in_process
from beam_jobs.cli import main
from pipeline.schema import DOCUMENT_SCHEMA
from tests.sources.conftest import SAMPLE

INPUTS = {
    "c4": [str(SAMPLE / "c4" / "*.json.gz")],
    "github": [str(SAMPLE / "github" / "*.jsonl.gz")],
    "wikipedia": [str(SAMPLE / "wikipedia" / "*.xml.bz2")],
    "books": [str(SAMPLE / "books" / "*.txt.gz")],
    "arxiv": [str(SAMPLE / "arxiv" / "*")],
    "stackexchange": [str(SAMPLE / "stackexchange" / "*" / "Posts.xml")],
}
ONE_WORKER = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def _run(name, out, extra=()):
    return main(["source", name, "--input", *INPUTS[name], "--output", str(out), *ONE_WORKER, *extra])


def _read(out):
    parts = sorted(glob.glob(os.path.join(out, "part-*.parquet")))
    tables = [pq.read_table(p) for p in parts]
    for t in tables:
        assert t.schema.equals(DOCUMENT_SCHEMA, check_metadata=False)
    return [r for t in tables for r in t.to_pylist()]


@pytest.mark.slow
@pytest.mark.parametrize("name", sources.NAMES)
def test_beam_job_matches_in_process_run(name, tmp_path):
    out = tmp_path / name
    assert _run(name, out) == 0
    stats = json.loads((out / "stats.json").read_text())
    rows = _read(out)
    assert stats["job"] == name and stats["kept"] == len(rows) > 0
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    assert {r["source"] for r in rows} == {name}
    module = sources.get(name)
    config = module.config_from_args(_args(name, INPUTS[name]))
    table, local_stats, _ = run_in_process(sources.plan(name, config, str(tmp_path / "local")), sources.expand(module, INPUTS[name]),
                                           tmp_path / "local")
    assert [r["id"] for r in rows] == table.column("id").to_pylist()
    assert [r["text"] for r in rows] == table.column("text").to_pylist()
    assert local_stats["stages"] == stats["stages"]


def _args(name, inputs):
    import argparse

    from beam_jobs import source

    parser = argparse.ArgumentParser()
    source.add_arguments(parser)
    return parser.parse_args([name, "--input", *inputs, "--output", "y"])


def test_expected_drops_on_the_samples(tmp_path):
    import gzip
    from collections import Counter

    # books: the sample holds two real near-duplicate pairs (data/sample/SOURCES-README.md): one of each goes
    assert _run("books", tmp_path / "b") == 0
    assert json.loads((tmp_path / "b" / "stats.json").read_text())["dropped"] == {"near_duplicate": 2}
    # github: the LGPL repository's files go; of the rest, every later copy of a file's content
    assert _run("github", tmp_path / "g") == 0
    dropped = json.loads((tmp_path / "g" / "stats.json").read_text())["dropped"]
    with gzip.open(SAMPLE / "github" / "github-sample.jsonl.gz", "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    allowed = [r for r in records if r["license"] != "LGPL-2.1-only"]
    assert dropped["license"] == len(records) - len(allowed) > 0
    assert dropped["duplicate_file"] == sum(n - 1 for n in Counter(r["content"] for r in allowed).values()) > 0


@pytest.mark.slow
def test_worker_count_does_not_change_bytes_and_rerun_is_skipped(tmp_path, capsys):
    for name in ("github", "books"):
        one, two = tmp_path / f"{name}1", tmp_path / f"{name}2"
        assert _run(name, one) == 0
        assert main(["source", name, "--input", *INPUTS[name], "--output", str(two),
                     "--direct_num_workers=2", "--direct_running_mode=multi_processing"]) == 0
        parts = sorted(os.path.basename(p) for p in glob.glob(str(one / "part-*.parquet")))
        assert parts and parts == sorted(os.path.basename(p) for p in glob.glob(str(two / "part-*.parquet")))
        for p in parts:
            assert (one / p).read_bytes() == (two / p).read_bytes()
        before = (one / "stats.json").read_bytes()
        assert _run(name, one) == 0
        assert "up to date" in capsys.readouterr().out and (one / "stats.json").read_bytes() == before


def test_empty_glob_and_bomb_are_clear_errors(tmp_path, capsys):
    assert main(["source", "books", "--input", str(tmp_path / "none*.txt"), "--output", str(tmp_path / "o")]) == 2
    assert "no input files match" in capsys.readouterr().err
    from tests.sources.conftest import DATA

    assert main(["source", "wikipedia", "--input", str(DATA / "xml_bomb.xml"), "--output", str(tmp_path / "w"), *ONE_WORKER]) == 2
    err = capsys.readouterr().err
    assert "xml_bomb.xml" in err and "refused unsafe XML" in err
    assert not (tmp_path / "w" / "stats.json").exists()


@pytest.mark.slow
def test_c4_raw_pages_on_beam_matches_in_process_run(tmp_path):
    """C4's raw-page rules through Beam (the line census as a side input) give the in-process result."""
    from beam_jobs import source

    args = _args("c4", INPUTS["c4"])
    args.output, args.c4_rules = str(tmp_path / "c4"), "raw-pages"  # set as `--c4-rules raw-pages` would
    assert source.run(args, ONE_WORKER) == 0
    stats = json.loads((tmp_path / "c4" / "stats.json").read_text())
    config = sources.get("c4").config_from_args(args)
    from tests.sources.conftest import run_source

    table, local, _ = run_source("c4", sources.expand(sources.get("c4"), INPUTS["c4"]), config, tmp_path / "local")
    assert config.rules == "raw-pages" and stats["kept"] == table.num_rows < stats["read"]
    assert [r["text"] for r in _read(tmp_path / "c4")] == table.column("text").to_pylist()
    assert local["stages"] == stats["stages"]
