"""Fuzzing the two shard formats the later jobs read, against their current readers:

- document Parquet (`corpusmill stats`: `summarise_document_shard`; also what `tokenize` reads), and
- Megatron token shards `.idx`/`.bin` (`corpusmill stats`: `summarise_token_shard`; `mix` and `train`:
  `IndexedDataset`),

with the seeded damage of tests/reliability_damage.py. What holds, and is checked: no reader
crashes; a damaged shard is either refused with an error naming it, or reads with exactly the
document count of the undamaged shard (the damage was in bytes no reader checks: a flipped token,
a flipped byte of a text page). `mix` and `train` refuse every damaged `.idx`, and every `.bin`
whose size changed, naming the shard.

And `corpusmill tokenize` on damaged document Parquet (small row groups): it reads row group by row
group, so a damaged row group is a dead letter and its documents a counted drop, and every row group
the damage did not touch comes out with the tokens of the undamaged file.

`python -m tests.test_reliability_shards` prints the counts.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.runs import write_parquet
from pipeline.schema import document_id, to_document_table
from tests.reliability_damage import CASES, INF, MORE_CASES, Tally, damage, touches
from tokenizer.megatron import IndexedDataset, ShardWriter

try:  # the stats readers moved from pipeline/ to reporting/ after d37ded6, this branch's base
    from reporting.shard_stats import summarise_document_shard, summarise_token_shard
except ImportError:
    from pipeline.shard_stats import summarise_document_shard, summarise_token_shard

DOCS = Path(__file__).resolve().parent / "data" / "tokenizer" / "c4.jsonl.gz"


def documents() -> list[dict]:
    rows = [json.loads(line) for line in gzip.open(DOCS, "rt", encoding="utf-8")]
    return [{"id": document_id("c4", r["native_id"]), "source": "c4", "url": r.get("url"), "text": r["text"], "metadata": "{}"} for r in rows]


def document_shard(folder: Path) -> Path:
    path = folder / "part-00000.parquet"
    write_parquet(to_document_table(pa.Table.from_pylist(documents())), str(path))
    return path


def token_shard(folder: Path) -> str:
    """A shard of the documents' UTF-8 bytes as token ids (a real byte-level tokenization, vocab 256)."""
    texts = [d["text"].encode() for d in documents()]
    prefix = str(folder / "c4-00000")
    with ShardWriter(prefix, write_sources=True) as writer:
        writer.add(np.frombuffer(b"".join(texts), np.uint8).astype(np.uint16), np.array([len(t) for t in texts]), 0)
    return prefix


def fuzz_document_parquet(tmp: Path) -> Counter:
    path = document_shard(tmp)
    original = path.read_bytes()
    clean = summarise_document_shard(str(path))
    assert clean.error is None and clean.sources["c4"].docs == len(documents())
    outcome = Counter()
    for kind, seed in CASES:
        path.write_bytes(damage(original, kind, seed)[0])
        result = summarise_document_shard(str(path))  # must not raise
        if result.error is not None:
            assert result.error.strip() and result.sources == {}
            outcome["refused with an error"] += 1
        else:
            assert result.sources["c4"].docs == clean.sources["c4"].docs, (kind, seed)
            outcome["read, same document count"] += 1
    return outcome


# --- tokenize on damaged document Parquet

ROW_GROUP_DOCS = 3  # 10 row groups of the 30 documents, so that most damage hits one row group, not the file
READ_COLUMNS = ("source", "text")  # what tokenize reads: damage to the other columns touches nothing it reads


def row_group_shard(path: Path) -> Path:
    """The documents as the project writes a document shard (its schema, `pipeline.runs.write_parquet`'s
    zstd level 3), but in small row groups."""
    pq.write_table(to_document_table(pa.Table.from_pylist(documents())), str(path), compression="zstd", compression_level=3,
                   row_group_size=ROW_GROUP_DOCS)
    return path


def parquet_layout(path: Path) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(byte span of the read columns' chunks of each row group, span of the footer) of an undamaged file."""
    meta = pq.ParquetFile(str(path)).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    spans, end = [], 4
    for i in range(meta.num_row_groups):
        chunks = [meta.row_group(i).column(j) for j in range(meta.num_columns)]
        starts = [min(c.dictionary_page_offset or c.data_page_offset, c.data_page_offset) for c in chunks]
        read = [k for k, name in enumerate(names) if name in READ_COLUMNS]
        spans.append((min(starts[k] for k in read), max(starts[k] + chunks[k].total_compressed_size for k in read)))
        end = max(end, max(s + c.total_compressed_size for s, c in zip(starts, chunks)))
    return spans, (end, path.stat().st_size)


def damaged_row_groups(spans, footer, kind: str, touched) -> set[int]:
    """Row groups whose read bytes the damage touched. A damaged footer (or the leading magic) touches
    every row group; after a hole every later byte is at another offset than the footer says."""
    if kind == "hole":
        (p, _), = touched
        data_touched = [(p, INF)]
        footer_touched = touches(footer, touched)
    else:
        data_touched = touched
        footer_touched = touches(footer, touched) or touches((0, 4), touched)
    if footer_touched:
        return set(range(len(spans)))
    return {i for i, span in enumerate(spans) if touches(span, data_touched)}


def tokenize(shards: str, model: str, output: Path) -> dict:
    from beam_jobs.cli import main

    assert main(["tokenize", "--source", f"c4={shards}", "--tokenizer", model, "--output", str(output),
                 "--direct_num_workers=1", "--direct_running_mode=in_memory"]) == 0
    return json.loads((output / "stats.json").read_text())


def train_tokenizer(tmp: Path) -> str:
    from beam_jobs.cli import main

    shard = document_shard(tmp / "docs")
    assert main(["train-tokenizer", "--source", f"c4={shard}", "--output", str(tmp / "tok"), "--vocab-size", "1000", "--renormalize",
                 "--sample-chars", "200000", "--threads", "1", "--direct_num_workers=1", "--direct_running_mode=in_memory"]) == 0
    return str(tmp / "tok" / "tokenizer.model")


def fuzz_tokenize(tmp: Path, cases=CASES) -> Tally:
    """Every case a damaged copy of one document shard, all tokenized by one `corpusmill tokenize` run
    (a crash on any case fails it). Per case: the row groups that the damage did not touch must come
    out with the tokens of the undamaged file's run (`lost` counts their documents that do not);
    every dropped row group is a dead letter; the job's read = kept + Σ dropped."""
    model = train_tokenizer(tmp)
    original_path = row_group_shard(tmp / "original.parquet")
    original = original_path.read_bytes()
    spans, footer = parquet_layout(original_path)
    tokenize(str(original_path), model, tmp / "clean")
    clean = IndexedDataset(str(tmp / "clean" / "c4-00000"))
    assert len(clean) == len(documents()) and len(spans) == -(-len(documents()) // ROW_GROUP_DOCS)
    per_group = [[clean[d].tolist() for d in range(g * ROW_GROUP_DOCS, min((g + 1) * ROW_GROUP_DOCS, len(clean)))] for g in range(len(spans))]

    (tmp / "damaged").mkdir()
    touched_groups = []
    for n, (kind, seed) in enumerate(cases):
        data, touched = damage(original, kind, seed)
        (tmp / "damaged" / f"case-{n:03d}.parquet").write_bytes(data)
        touched_groups.append(damaged_row_groups(spans, footer, kind, touched))
    stats = tokenize(str(tmp / "damaged" / "*.parquet"), model, tmp / "out")
    dead = [json.loads(line) for line in (tmp / "out" / "dead_letter.jsonl").read_text().splitlines()]
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())

    # The job's accounting: every document (and every unreadable file) read is kept or dropped by a reason,
    # and every drop of damage has its dead letter.
    assert stats["read"] == stats["kept"] + sum(stats["dropped"].values())
    assert stats["dropped"].get("unreadable_row_group", 0) == sum(d["documents"] for d in dead if d["reason"] == "unreadable_row_group")
    assert stats["dropped"].get("unreadable_file", 0) == sum(d["reason"] == "unreadable_file" for d in dead)
    assert set(stats["dropped"]) <= {"unreadable_row_group", "unreadable_file"}, stats["dropped"]
    assert stats["kept"] == sum(s["documents"] for s in manifest["shards"])

    tally = Tally()
    for shard in manifest["shards"]:
        n = int(Path(shard["input"]).stem.split("-")[1])
        mine = [d for d in dead if d["file"] == shard["input"]]
        assert all(d["error"] for d in mine)
        if any(d["reason"] == "unreadable_file" for d in mine):
            assert len(mine) == 1 and shard["documents"] == 0
            dropped = set(range(len(spans)))
        else:
            dropped = {d["row_group"] for d in mine}
            for d in mine:
                assert d["record"] == d["row_group"] * ROW_GROUP_DOCS and d["documents"] == len(per_group[d["row_group"]])
        kept = [g for g in range(len(spans)) if g not in dropped]
        ds = IndexedDataset(str(tmp / "out" / shard["prefix"]))
        assert len(ds) == sum(len(per_group[g]) for g in kept), cases[n]  # a row group read whole comes out whole
        docs = iter(ds[i].tolist() for i in range(len(ds)))
        tally.cases += 1
        tally.records += len(clean)
        tally.dead_letters += len(mine)
        for g in range(len(spans)):
            damaged = g in touched_groups[n]
            tally.damaged += len(per_group[g]) if damaged else 0
            got = [next(docs) for _ in per_group[g]] if g in kept else None
            for before, after in zip(per_group[g], got or [None] * len(per_group[g])):
                if damaged:
                    tally.damaged_unchanged += after == before
                    tally.changed += after is not None and after != before
                else:
                    tally.lost += after != before
        del ds
    assert tally.cases == len(cases)
    return tally


def fuzz_token_shard(tmp: Path) -> dict[str, Counter]:
    """Per damaged file (.idx, .bin): what `summarise_token_shard` (stats) and `IndexedDataset` (mix,
    train) made of each case."""
    prefix = token_shard(tmp)
    clean = IndexedDataset(prefix)
    count = len(clean)
    tokens, lengths = clean.gather(np.arange(count))
    outcomes = {}
    for part in (".idx", ".bin"):
        original = Path(prefix + part).read_bytes()
        outcome = Counter()
        for kind, seed in CASES:
            Path(prefix + part).write_bytes(damage(original, kind, seed)[0])
            stats = summarise_token_shard(str(tmp), "c4-00000", ["c4"], "c4")  # must not raise
            if stats.error is not None:
                outcome["stats: refused with an error"] += 1
            else:
                assert stats.sources["c4"].docs == count, (part, kind, seed)
                outcome["stats: read, same document count"] += 1
            try:
                ds = IndexedDataset(prefix)
            except Exception as err:  # noqa: BLE001 - what the reader raises is what is measured
                named = isinstance(err, ValueError) and "c4-00000" in str(err)
                outcome["IndexedDataset: refused naming the shard" if named else f"IndexedDataset: {type(err).__name__} not naming the shard"] += 1
                continue
            if len(ds) != count:
                outcome["IndexedDataset: read, other document count"] += 1
            else:
                try:
                    got, got_lengths = ds.gather(np.arange(count))
                    same = np.array_equal(got, tokens) and np.array_equal(got_lengths, lengths)
                    outcome["IndexedDataset: read, unchanged" if same else "IndexedDataset: read, documents changed"] += 1
                except Exception as err:  # noqa: BLE001
                    outcome[f"IndexedDataset: reading a document raises {type(err).__name__}"] += 1
            del ds
        Path(prefix + part).write_bytes(original)
        outcomes[part] = outcome
    return outcomes


def test_damaged_document_parquet_is_refused_or_reads_the_same_documents(tmp_path):
    outcome = fuzz_document_parquet(tmp_path)
    assert sum(outcome.values()) == len(CASES) and outcome["refused with an error"] > 0


def test_tokenize_keeps_the_intact_row_groups_of_damaged_document_parquet(tmp_path):
    tally = fuzz_tokenize(tmp_path)
    assert tally.lost == 0 and tally.dead_letters > 0 and tally.damaged < tally.records


@pytest.mark.slow
def test_tokenize_keeps_the_intact_row_groups_of_damaged_document_parquet_more_cases(tmp_path):
    tally = fuzz_tokenize(tmp_path, MORE_CASES)
    assert tally.lost == 0 and tally.dead_letters > 0 and tally.damaged < tally.records


def test_tokenize_a_parquet_without_text_is_one_dead_letter_and_an_empty_shard(tmp_path):
    model = train_tokenizer(tmp_path)
    (tmp_path / "in").mkdir()
    row_group_shard(tmp_path / "in" / "a.parquet")
    pq.write_table(pa.table({"source": ["c4"], "body": ["no text column"]}), str(tmp_path / "in" / "b.parquet"))
    stats = tokenize(str(tmp_path / "in" / "*.parquet"), model, tmp_path / "out")
    dead = [json.loads(line) for line in (tmp_path / "out" / "dead_letter.jsonl").read_text().splitlines()]
    assert [(Path(d["file"]).name, d["reason"]) for d in dead] == [("b.parquet", "unreadable_file")] and "'text'" in dead[0]["error"]
    assert stats["read"] == len(documents()) + 1 and stats["kept"] == len(documents()) and stats["dropped"] == {"unreadable_file": 1}
    assert len(IndexedDataset(str(tmp_path / "out" / "c4-00001"))) == 0


def test_damaged_token_shard_is_refused_or_counted_the_same_by_stats(tmp_path):
    outcomes = fuzz_token_shard(tmp_path)
    # A truncated or holed .bin no longer matches its index: stats always refuses it.
    assert outcomes[".bin"]["stats: refused with an error"] >= sum(k in ("truncate", "hole") for k, _ in CASES)


def test_damaged_token_shard_is_refused_naming_it_by_mix_and_train(tmp_path):
    # tokenizer/megatron.py's read_index checks the index's size against its header, the offsets against
    # the lengths and .bin's size against the index: every damaged .idx, and every .bin whose size changed,
    # is a ShardFormatError naming the file (before, a truncated or holed .idx was numpy's ValueError).
    outcomes = fuzz_token_shard(tmp_path)
    wrong = [k for o in outcomes.values() for k in o if k.endswith("not naming the shard") or "raises" in k or "other document count" in k]
    assert not wrong, wrong
    assert outcomes[".idx"]["IndexedDataset: refused naming the shard"] >= sum(k != "flip" for k, _ in CASES)
    assert outcomes[".bin"]["IndexedDataset: refused naming the shard"] == sum(k in ("truncate", "hole") for k, _ in CASES)


def test_a_cut_manifest_is_refused_naming_it_by_train(tmp_path):
    from model.data import open_shards, write_shards

    manifest = write_shards(tmp_path, [[1, 5, 6, 2], [1, 7, 2]], vocab_size=16, bos_id=1, eos_id=2)
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"{manifest}: not a token-shard manifest"):
        open_shards(manifest)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print("document Parquet:", dict(fuzz_document_parquet(Path(tmp))))
    print(Tally.HEADER)
    for name, cases in (("document .parquet through tokenize", CASES), ("the same, 85 more cases", MORE_CASES)):
        with tempfile.TemporaryDirectory() as tmp:
            print(fuzz_tokenize(Path(tmp), cases).row(name))
    with tempfile.TemporaryDirectory() as tmp:
        for part, outcome in fuzz_token_shard(Path(tmp)).items():
            print(f"token shard {part}:", dict(outcome))
