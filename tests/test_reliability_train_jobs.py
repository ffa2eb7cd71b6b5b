"""kill -9 and replay for the jobs that train a model: train-tokenizer, train-lm, train-quality; and
1 vs 2 workers for train-quality. Through the `corpusmill` command as a subprocess, with the kill
helpers of tests/test_reliability_kill.py: the job's progress is its completion markers in
OUTPUT/.work/<fingerprint>/done/, which these jobs keep per step they can resume from:

- train-tokenizer: one marker per sampled input file (`done/sample/<source>-NNNNN.json`, the sample
  file is in OUTPUT/sample/), then the sample report (`done/report/sample.json`); the SentencePiece
  training follows.
- train-lm: one marker per step (`done/lm/{normalize,sentencepiece,pieces,arpa,binary}.json`), the
  intermediates in the work folder.
- train-quality: one marker per input file (`done/examples/NNNNNN.json`, its prepared examples next
  to it), then the deduplicated examples (`done/read/examples.json`); fastText's training follows.

Every kill must catch the job running (exit -9), leave no stats file, and the final outputs must equal
an uninterrupted one-worker run byte for byte, except the timing fields (`*_seconds`) of the JSON files,
which are compared with their values taken out: how long a step took is not an output of the data.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.runs import write_parquet
from pipeline.schema import document_id, to_document_table
from tests.conftest import WIKI
from tests.test_reliability_kill import ONE_WORKER, TWO_WORKERS, corpusmill, files, kill_at, markers, run_to_end
from tests.tokenizer.conftest import make_run

TOKENIZER_DATA = Path(__file__).resolve().parent / "data" / "tokenizer"


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("_seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def same_outputs(expected: dict[str, bytes], got: dict[str, bytes], what: str) -> None:
    assert sorted(got) == sorted(expected), what
    for name, data in expected.items():
        if name.endswith(".json") and data != got[name]:
            a, b = json.loads(data), json.loads(got[name])
            assert without_timings(a) == without_timings(b), f"{name} differs ({what})"
            # Only timing fields may differ, and they are there in both.
            assert a.keys() == b.keys()
        else:
            assert got[name] == data, f"{name} differs ({what})"


def kill_and_replay(args: list[str], points, tmp: Path, stats_file: str = "stats.json", workers=ONE_WORKER) -> dict[str, bytes]:
    """`workers`: the Beam options of every run (none for train-lm, which is not a Beam job)."""
    reference, replayed = tmp / "reference", tmp / "replayed"
    run_to_end(corpusmill(args, reference, workers))
    for point in points:
        kill_at(corpusmill(args, replayed, workers), replayed, point)
        # Killed mid-job: the finished steps' markers stay for the rerun, and there is no stats file yet.
        assert markers(replayed) >= point and not (replayed / stats_file).exists()
    run_to_end(corpusmill(args, replayed, workers))
    expected = files(reference)
    assert stats_file in expected
    same_outputs(expected, files(replayed), "after kill -9 and replay")
    return expected


# --- inputs: real documents bundled with the tests


def _split_jsonl(src: Path, folder: Path, name: str, parts: int) -> list[str]:
    lines = gzip.decompress(src.read_bytes()).splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (folder / f"{name}-{i}.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[i::parts]), mtime=0))
    return [str(folder / f"{name}-*.jsonl.gz")]


def _pages(folder: Path, parts: int = 3) -> list[str]:
    """Web pages as document Parquet shards (url, text): the bundled ccnet output and C4 records."""
    rows = []
    for source in ("commoncrawl", "c4"):
        for line in gzip.open(TOKENIZER_DATA / f"{source}.jsonl.gz", "rt", encoding="utf-8"):
            r = json.loads(line)
            rows.append({"id": document_id(source, r["native_id"]), "source": source, "url": r.get("url"), "text": r["text"], "metadata": "{}"})
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        write_parquet(to_document_table(pa.Table.from_pylist(rows[i::parts])), str(folder / f"part-{i:05d}.parquet"))
    return [str(folder / "*.parquet")]


def tokenizer_args(folder: Path) -> list[str]:
    run = make_run(str(folder))  # 7 sources x 2 shards = 14 sampled files
    return ["train-tokenizer", "--input", run, "--vocab-size", "1200", "--sample-chars", "400000", "--threads", "2"]


def quality_args(folder: Path) -> list[str]:
    # 3 page shards + 3 Wikipedia files = 6 per-file markers, then the read marker.
    return ["train-quality", "--positives", *_split_jsonl(WIKI, folder / "wiki", "wiki", 3), "--negatives", *_pages(folder / "pages")]


@pytest.mark.slow
def test_train_tokenizer_killed_and_replayed_gives_the_same_bytes(tmp_path):
    # Killed after 3 and 10 of the 14 sampled files, then during SentencePiece's training (report written).
    out = kill_and_replay(tokenizer_args(tmp_path / "input"), (3, 10, 15), tmp_path)
    assert {"tokenizer.model", "tokenizer.vocab", "tokenizer.json"} <= set(out)
    assert len([n for n in out if n.startswith("sample/")]) == 14


@pytest.mark.slow
def test_train_lm_killed_and_replayed_gives_the_same_bytes(tmp_path):
    # Killed during SentencePiece's training (text normalised), while encoding (model trained), and
    # during build_binary (ARPA written).
    args = ["train-lm", "--input", str(WIKI), "--vocab-size", "4000"]
    out = kill_and_replay(args, (1, 2, 4), tmp_path, stats_file="stats-en.json", workers=[])
    assert {"en.sp.model", "en.sp.vocab", "en.arpa.bin", "en.lm.json"} <= set(out)


@pytest.mark.slow
def test_train_quality_killed_and_replayed_gives_the_same_bytes(tmp_path):
    # Killed after 2 and 4 of the 6 files' examples, then once the examples are written (fastText's training).
    out = kill_and_replay(quality_args(tmp_path / "input"), (2, 4, 7), tmp_path)
    assert {"wiki_vs_cc.bin", "wiki_vs_cc.bin.json", "examples/positives.txt", "examples/negatives.txt"} <= set(out)


@pytest.mark.slow
def test_train_quality_one_and_two_workers_give_the_same_bytes(tmp_path):
    args = quality_args(tmp_path / "input")
    run_to_end(corpusmill(args, tmp_path / "one", ONE_WORKER))
    run_to_end(corpusmill(args, tmp_path / "two", TWO_WORKERS))
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert "wiki_vs_cc.bin" in one
    same_outputs(one, two, "1 vs 2 workers")
