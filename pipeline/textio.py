"""Reading plain documents from the usual text containers, for jobs whose inputs are "some text":
JSON lines (`.jsonl`, `.json`, gzip or not, a `text` field), plain text (`.txt`: one document per
line), and Parquet document shards of any corpusmill job. Each document comes with its language
when the container records one.
"""
from __future__ import annotations

import gzip
import json
from typing import Iterator

import pyarrow.parquet as pq

from pipeline.runs import InputError


def iter_documents(path: str) -> Iterator[dict]:
    name = path.lower()
    if name.endswith(".parquet"):
        try:
            reader = pq.ParquetFile(path)
        except Exception as err:
            raise InputError(f"{path}: not a readable Parquet file ({err})") from err
        columns = [c for c in ("text", "language") if c in reader.schema_arrow.names]
        if "text" not in columns:
            raise InputError(f"{path}: Parquet file without a 'text' column")
        for i in range(reader.num_row_groups):
            yield from reader.read_row_group(i, columns=columns).to_pylist()
        return
    opener = gzip.open if name.endswith(".gz") else open
    stem = name[:-3] if name.endswith(".gz") else name
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if stem.endswith((".jsonl", ".json", ".ndjson")):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    yield {"text": record["text"], "language": record.get("lang") or record.get("language")}
                except (ValueError, KeyError, TypeError) as err:
                    raise InputError(f"{path}: record {n} is not a JSON object with a 'text' field ({err})") from err
        elif stem.endswith(".txt"):
            for line in f:
                if line.strip():
                    yield {"text": line.rstrip("\n"), "language": None}
        else:
            raise InputError(f"{path}: unknown text container (expected .jsonl, .json, .txt, .parquet, optionally .gz)")
