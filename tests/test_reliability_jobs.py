"""The damaged inputs of issue 13 through the `corpusmill` command: each job goes on, keeps what was
read before the damage and writes one dead letter for it."""
import bz2
import gzip
import json

from beam_jobs.cli import main
from tests.conftest import REPO, WARCS
from tests.reliability_damage import recoverable_prefix

SAMPLE = REPO / "data" / "sample"
ONE_WORKER = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def outputs(folder):
    stats = json.loads((folder / "stats.json").read_text())
    dead = [json.loads(line) for line in (folder / "dead_letter.jsonl").read_text().splitlines()]
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    return stats, dead


def test_truncated_c4_gzip_keeps_its_lines_and_the_job_goes_on(tmp_path):
    whole = (SAMPLE / "c4" / "c4-00000.json.gz").read_bytes()
    (tmp_path / "a-whole.json.gz").write_bytes(whole)
    cut = whole[: len(whole) * 2 // 3]
    (tmp_path / "b-cut.json.gz").write_bytes(cut)
    assert main(["source", "c4", "--input", str(tmp_path / "*.json.gz"), "--output", str(tmp_path / "out"), *ONE_WORKER]) == 0
    stats, dead = outputs(tmp_path / "out")
    # The cut file gives its complete lines (every one a C4 record) and one dead letter for the rest.
    complete_lines = recoverable_prefix(cut, "gz").count(b"\n")
    assert 0 < complete_lines < 186
    assert stats["read"] == 186 + complete_lines + 1
    assert [(d["file"].endswith("b-cut.json.gz"), d["reason"], d["record"]) for d in dead] == [(True, "corrupt_compression", complete_lines)]


def test_truncated_wikipedia_bz2_keeps_the_pages_of_its_whole_blocks(tmp_path):
    data = (SAMPLE / "wikipedia" / "enwiki-first-pages.xml.bz2").read_bytes()
    cut = data[: len(data) * 9 // 10]  # inside the second of its two bz2 blocks
    (tmp_path / "enwiki-cut.xml.bz2").write_bytes(cut)
    assert main(["source", "wikipedia", "--input", str(tmp_path / "*.xml.bz2"), "--output", str(tmp_path / "out"), *ONE_WORKER]) == 0
    stats, dead = outputs(tmp_path / "out")
    prefix = recoverable_prefix(cut, "bz2")
    assert 0 < len(prefix) < len(bz2.decompress(data))
    assert stats["read"] == prefix.count(b"</page>") + 1  # the pages of the first block, and the damage
    assert len(dead) == 1 and dead[0]["reason"] == "corrupt_compression"


def test_text_file_given_to_ccnet_is_one_dead_letter(tmp_path, lm_dir):
    text = tmp_path / "notes.warc"
    text.write_bytes(gzip.decompress((SAMPLE / "books" / "pg9198_9198-8.txt.gz").read_bytes())[:200_000])
    assert main(["ccnet", "--input", WARCS[0], str(text), "--output", str(tmp_path / "out"), "--lm-dir", lm_dir, *ONE_WORKER]) == 0
    stats, dead = outputs(tmp_path / "out")
    assert [(d["file"], d["reason"]) for d in dead] == [(str(text), "unreadable_archive")]
    assert stats["read"] == 111 + 1  # the sample WARC's responses, and the text file
