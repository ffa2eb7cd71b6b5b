"""One run/resume convention for every job.

An output folder holds `part-NNNNN.parquet` shards (or another job's files), `dead_letter.jsonl`
and, written last, `stats.json`. Every file is written to a temporary name in the same folder and
renamed into place, so a reader never sees half a file. A job's outputs depend only on its inputs
and config (never on worker count or timing), so a rerun after a crash writes the same bytes; the
closing step removes files a crashed or earlier run left that this run did not produce.

`stats.json` carries the run's fingerprint (config + input names, sizes and mtimes): a job whose
output folder already holds a complete run with the same fingerprint does nothing unless forced.
Paths may be local or any URI that `pyarrow.fs` understands (s3://, gs://, hdfs://), so the same job
writes to object stores when run on Dataflow, Flink or Spark.
"""
from __future__ import annotations

import contextlib
import fnmatch
import glob as globlib
import hashlib
import io
import json
import os
import posixpath
import uuid
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.accounting import JobStats

STATS_FILE = "stats.json"
DEAD_LETTER_FILE = "dead_letter.jsonl"
TMP_PREFIX = ".tmp-"


class InputError(ValueError):
    """Bad input named by file (and record): raised with a message a user can act on."""


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def expand_inputs(pattern: str | Iterable[str]) -> list[str]:
    """Sorted files matching one or more globs (local paths or URIs); an empty match is an error."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    files: set[str] = set()
    for pat in patterns:
        if "://" in pat:
            fs, path = _fs(pat)
            base = posixpath.dirname(path)
            scheme = pat.split("://", 1)[0]
            for info in fs.get_file_info(pafs.FileSelector(base, recursive=False)):
                if info.type == pafs.FileType.File and fnmatch.fnmatch(info.path, path):
                    files.add(f"{scheme}://{info.path}")
        else:
            files.update(p for p in globlib.glob(os.path.expanduser(pat), recursive=True) if os.path.isfile(p))
    if not files:
        raise InputError(f"no input files match {' '.join(repr(p) for p in patterns)}")
    return sorted(files)


def open_input(path: str):
    fs, p = _fs(path)
    return fs.open_input_stream(p, compression=None)


def open_random_access(path: str):
    """A seekable binary file: buffered `open` for a local path, pyarrow's random-access file for a URI."""
    if "://" not in path:
        return open(path, "rb")
    fs, p = _fs(path)
    return fs.open_input_file(p)


def read_bytes(path: str) -> bytes:
    with open_input(path) as f:
        return f.read()


def input_fingerprint(paths: list[str], config: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path in paths:
        fs, p = _fs(path)
        info = fs.get_file_info(p)
        h.update(f"{path}\x00{info.size}\x00{info.mtime_ns}\n".encode())
    return h.hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[pa.NativeFile]:
    """Write to a temporary sibling, then rename into place; a failure leaves no partial file."""
    fs, p = _fs(path)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    tmp = posixpath.join(posixpath.dirname(p), f"{TMP_PREFIX}{uuid.uuid4().hex}-{posixpath.basename(p)}")
    try:
        with fs.open_output_stream(tmp, compression=None) as out:
            yield out
        fs.move(tmp, p)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_output(path) as out:
        out.write(data)


def write_parquet(table: pa.Table, path: str) -> None:
    """zstd Parquet; bytes depend only on the table (no timestamps in the footer)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, row_group_size=8192)
    atomic_write_bytes(path, buf.getvalue())


def shard_name(index: int, ext: str = "parquet") -> str:
    return f"part-{index:05d}.{ext}"


def load_stats(output: str, stats_file: str = STATS_FILE) -> dict | None:
    fs, p = _fs(posixpath.join(output, stats_file) if "://" in output else os.path.join(output, stats_file))
    if fs.get_file_info(p).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(p) as f:
        return json.loads(f.read())


def is_complete(output: str, fingerprint: str, stats_file: str = STATS_FILE) -> bool:
    """True when `output` holds a finished run with this fingerprint and all its files are present."""
    stats = load_stats(output, stats_file)
    if not stats or stats.get("fingerprint") != fingerprint:
        return False
    fs, base = _fs(output)
    for name in stats.get("files", []):
        if fs.get_file_info(posixpath.join(base, name)).type != pafs.FileType.File:
            return False
    return True


def finalize(output: str, stats: JobStats, files: list[str], dead_letters: list[dict], stats_file: str = STATS_FILE) -> None:
    """Close a run: dead letters, then remove what this run did not write, then stats.json last."""
    stats.check()
    fs, base = _fs(output)
    fs.create_dir(base, recursive=True)
    dead = "".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n" for d in sorted(dead_letters, key=_dead_key))
    atomic_write_bytes(posixpath.join(base, DEAD_LETTER_FILE), dead.encode())
    keep = set(files) | {DEAD_LETTER_FILE, STATS_FILE, stats_file}
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=False)):
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.File and name not in keep and (name.startswith(TMP_PREFIX) or name.startswith("part-")):
            fs.delete_file(info.path)
    stats.extra["files"] = sorted(files)
    atomic_write_bytes(posixpath.join(base, stats_file), stats.to_json().encode())


def _dead_key(d: dict):
    position = d.get("offset", d.get("record"))
    return (str(d.get("file", "")), int(position) if position is not None else -1, str(d.get("reason", "")))
