"""GitHub (LLaMA §2.1: "we kept only projects that are distributed under the Apache, BSD and MIT
licenses. Additionally, we filtered low quality files with heuristics based on the line length or
proportion of alphanumeric characters, and removed boilerplate, such as headers, with regular
expressions. Finally, we deduplicate the resulting dataset at the file level, with exact matches.")

    read -> license -> code_quality -> boilerplate -> hash_content -> [file census] -> exact_dedup

Inputs, either:
- JSON lines (gzip or not) of {"repo_name" (or "repo"), "path", "license", "content"}, one file each
  (the BigQuery `github_repos` export / the shared corpus layout); or
- a directory: a checkout of one repository (files under it, `.git` skipped); its licence is
  recognised from the LICENSE / LICENCE / COPYING file at its root by the regular expressions below.

Rules and thresholds (`GitHubConfig`, docs/sources.md):
- licence: the SPDX expression must be satisfiable with `allowed_licenses` (MIT, Apache-2.0,
  BSD-2-Clause, BSD-3-Clause): an `OR` needs one allowed side, an `AND` needs both; others go as
  `license`;
- quality (the Codex / RedPajama heuristics): a line longer than `max_line_length` (1000) chars, a
  mean line length over `max_mean_line_length` (100), or an alphanumeric share under
  `min_alnum_fraction` (0.25) drops the file (`long_line`, `long_mean_line`, `low_alnum`);
- boilerplate: a comment block at the top of the file (after a shebang / encoding line) that
  mentions a licence or copyright is removed (`#`, `//`, `/* */`, `<!-- -->`, `--`, `;` comments);
  a file left empty goes as `empty`;
- exact dedup: files with byte-identical (post-boilerplate) text: the first in input order stays.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.accounting import StageStats
from pipeline.runs import InputError, read_bytes
from pipeline.sources.common import (
    ApplyExactDedup,
    BatchBuilder,
    DropEmpty,
    FileOfOtherFormat,
    HashContent,
    TextStep,
    lines_until_damage,
    open_maybe_compressed,
    text_totals,
)

SOURCE = "github"
STAGES = ["read", "license", "code_quality", "boilerplate", "drop_empty", "hash_content", "exact_dedup"]
GLOBAL = "exact"
ALLOWED = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause")
EXTRA_FIELDS = [pa.field("_license", pa.string())]


@dataclasses.dataclass
class GitHubConfig:
    allowed_licenses: tuple[str, ...] = ALLOWED
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    max_file_bytes: int = 1 << 20  # a file bigger than 1 MiB is data or generated, not code
    dedup_range_bits: int = 4
    batch_records: int = 256

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [
            LicenseFilter(self.allowed_licenses),
            CodeQuality(self.max_line_length, self.max_mean_line_length, self.min_alnum_fraction),
            StripBoilerplate(),
            DropEmpty(),
            HashContent(),
        ]

    def after(self) -> list:
        return [ApplyExactDedup(reason="duplicate_file")]


def expand(patterns: list[str]) -> list[str]:
    """JSON-lines files and repository directories matching the globs, sorted."""
    import glob

    out = set()
    for pat in patterns:
        for p in glob.glob(os.path.expanduser(pat)):
            if os.path.isdir(p) or os.path.isfile(p):
                out.add(p)
    if not out:
        raise InputError(f"no GitHub input (JSON lines files or repository folders) matches {' '.join(map(repr, patterns))}")
    return sorted(out)


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: GitHubConfig) -> Iterator:
    builder = BatchBuilder(SOURCE, file_index, config.batch_records, EXTRA_FIELDS)
    records = _read_directory(path, stats, dead, config) if os.path.isdir(path) else _read_jsonl(path, stats, dead, config)
    for record, repo, file_path, license_, content in records:
        meta = {"repo_name": repo, "path": file_path, "license": license_}
        full = builder.add(record, f"{repo}/{file_path}", content, url=f"https://github.com/{repo}/blob/HEAD/{file_path}", metadata=meta, _license=license_)
        if full:
            yield full
    last = builder.flush()
    if last:
        yield last


def _dead(stats, dead, path, record, reason, error):
    stats.drop(reason)
    dead.append({"file": path, "record": record, "reason": reason, "error": error[:500]})


def _read_jsonl(path, stats, dead, config):
    other_format = FileOfOtherFormat(stats, dead, path)
    with open_maybe_compressed(path) as f:
        for record, raw in lines_until_damage(f, path, stats, dead):
            if not raw.strip():
                continue
            stats.docs_in += 1
            try:
                obj = json.loads(raw)
                repo = obj.get("repo_name", obj.get("repo"))
                content, file_path = obj["content"], obj["path"]
                if not isinstance(content, str) or not isinstance(repo, str):
                    raise TypeError("'repo_name' and 'content' must be strings")
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                _dead(stats, dead, path, record, "malformed_record", f"{type(err).__name__}: {err}")
                continue
            if len(content.encode("utf-8", "surrogatepass")) > config.max_file_bytes:
                stats.drop("too_large")
                continue
            stats.docs_out += 1
            yield record, repo, file_path, obj.get("license") or "", content.replace("\r\n", "\n")
    other_format.close("GitHub JSON lines")


LICENSE_FILES = re.compile(r"^(licen[cs]e|copying)(\.(md|txt|rst))?$", re.I)
# Order matters: Apache and BSD texts are recognised before MIT's shorter grant.
LICENSE_PATTERNS = [
    ("Apache-2.0", re.compile(r"Apache License,?\s+Version 2\.0", re.I)),
    ("BSD-3-Clause", re.compile(r"Redistribution and use in source and binary forms.*?Neither the name", re.I | re.S)),
    ("BSD-2-Clause", re.compile(r"Redistribution and use in source and binary forms", re.I)),
    ("MIT", re.compile(r"Permission is hereby granted, free of charge, to any person obtaining a copy", re.I)),
    ("GPL-family", re.compile(r"GNU (LESSER |LIBRARY |AFFERO )?GENERAL PUBLIC LICENSE", re.I)),
]


def detect_license(text: str) -> str:
    for spdx, pattern in LICENSE_PATTERNS:
        if pattern.search(text):
            return spdx
    return "unknown"


def _read_directory(root, stats, dead, config):
    repo = os.path.basename(os.path.normpath(root))
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        files.extend(os.path.join(dirpath, f) for f in filenames)
    files.sort()
    license_ = "unknown"
    for f in files:
        if os.path.dirname(f) == os.path.normpath(root) and LICENSE_FILES.match(os.path.basename(f)):
            license_ = detect_license(read_bytes(f).decode("utf-8", "replace"))
            break
    for record, f in enumerate(files):
        rel = os.path.relpath(f, root).replace(os.sep, "/")
        stats.docs_in += 1
        try:
            data = read_bytes(f)
        except OSError as err:
            _dead(stats, dead, f, record, "unreadable_file", f"{type(err).__name__}: {err}")
            continue
        if len(data) > config.max_file_bytes:
            stats.drop("too_large")
            continue
        if b"\x00" in data[:8192]:
            stats.drop("binary")
            continue
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            stats.drop("binary")
            continue
        stats.docs_out += 1
        yield record, repo, rel, license_, content.replace("\r\n", "\n")


_SPDX_TOKEN = re.compile(r"\(|\)|\bAND\b|\bOR\b|\bWITH\b|[^\s()]+")


def license_allowed(expression: str, allowed: tuple[str, ...]) -> bool:
    """Evaluates an SPDX expression ('MIT OR Apache-2.0', '(MIT AND BSD-3-Clause)') against the allowed
    set: OR needs one allowed side, AND both. Unknown or empty -> not allowed."""
    tokens = _SPDX_TOKEN.findall(expression or "")
    pos = 0

    def atom():
        nonlocal pos
        if pos >= len(tokens):
            return False
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = disjunction()
            if pos < len(tokens) and tokens[pos] == ")":
                pos += 1
            return value
        ok = tok.rstrip("+") in allowed
        if pos < len(tokens) and tokens[pos] == "WITH":  # an exception clause keeps the licence's verdict
            pos += 2
        return ok

    def conjunction():
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] == "AND":
            pos += 1
            value = atom() and value
        return value

    def disjunction():
        nonlocal pos
        value = conjunction()
        while pos < len(tokens) and tokens[pos] == "OR":
            pos += 1
            value = conjunction() or value
        return value

    return bool(tokens) and disjunction()


@dataclasses.dataclass
class LicenseFilter:
    allowed: tuple[str, ...] = ALLOWED
    name: str = "license"

    def __call__(self, batch):
        stats = StageStats(self.name, docs_in=batch.num_rows)
        stats.chars_in, stats.lines_in = text_totals(batch.column("text"))
        licenses = batch.column("_license").to_pylist()
        verdict = {lic: license_allowed(lic, self.allowed) for lic in set(licenses)}
        keep = np.array([verdict[lic] for lic in licenses], dtype=bool)
        out = batch.filter(pa.array(keep))
        stats.drop("license", int((~keep).sum()))
        stats.docs_out = out.num_rows
        stats.chars_out, stats.lines_out = text_totals(out.column("text"))
        return out, stats


@dataclasses.dataclass
class CodeQuality:
    """Line-length and alphanumeric-share rules, vectorised over the batch with pyarrow.compute."""

    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    name: str = "code_quality"

    def __call__(self, batch):
        stats = StageStats(self.name, docs_in=batch.num_rows)
        text = batch.column("text")
        stats.chars_in, stats.lines_in = text_totals(text)
        if batch.num_rows == 0:
            return batch, stats
        lines = pc.split_pattern(text, "\n")
        lengths = pc.utf8_length(lines.flatten()).to_numpy(zero_copy_only=False)
        offsets = lines.offsets.to_numpy(zero_copy_only=False)
        offsets = offsets - offsets[0]
        counts = np.diff(offsets)
        max_len = np.maximum.reduceat(lengths, offsets[:-1]) if len(lengths) else np.zeros(batch.num_rows)
        max_len = np.where(counts > 0, max_len, 0)
        total = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.float64)
        mean_len = total / np.maximum(counts, 1)
        non_alnum = pc.utf8_length(pc.replace_substring_regex(text, r"[\p{L}\p{N}]", "")).to_numpy(zero_copy_only=False)
        alnum = (total - non_alnum) / np.maximum(total, 1)
        long_line = max_len > self.max_line_length
        long_mean = ~long_line & (mean_len > self.max_mean_line_length)
        low_alnum = ~long_line & ~long_mean & (alnum < self.min_alnum_fraction)
        stats.drop("long_line", int(long_line.sum()))
        stats.drop("long_mean_line", int(long_mean.sum()))
        stats.drop("low_alnum", int(low_alnum.sum()))
        out = batch.filter(pa.array(~(long_line | long_mean | low_alnum)))
        stats.docs_out = out.num_rows
        stats.chars_out, stats.lines_out = text_totals(out.column("text"))
        return out, stats


_LICENSE_WORDS = re.compile(
    r"copyright|spdx-license-identifier|licen[cs]ed under|all rights reserved|permission is hereby granted|"
    r"redistribution and use|free software|without warranty|\(c\)\s*\d{4}|licen[cs]e:",
    re.I,
)
_PREAMBLE = re.compile(r"\A(?:#![^\n]*\n|[ \t]*#[^\n]*coding[:=][^\n]*\n)*")
# One comment block at the very start: a run of line comments, or one block comment.
_HEADER_BLOCK = re.compile(
    r"\A(?:[ \t]*\n)*(?:"
    r"(?:[ \t]*(?:#|//|--|;+)[^\n]*(?:\n|\Z))+"  # line comments
    r"|[ \t]*/\*.*?\*/[ \t]*(?:\n|\Z)"  # C block comment
    r"|[ \t]*<!--.*?-->[ \t]*(?:\n|\Z)"  # HTML/XML comment
    r"|[ \t]*(?:\"\"\"|''')(?:(?!\"\"\"|''').)*?(?:\"\"\"|''')[ \t]*(?:\n|\Z)"  # a Python module docstring
    r")",
    re.S,
)


def strip_license_header(text: str) -> tuple[str, bool]:
    """Removes the first comment block if it is a licence / copyright header; keeps shebang/encoding."""
    preamble = _PREAMBLE.match(text).group(0)
    rest = text[len(preamble) :]
    m = _HEADER_BLOCK.match(rest)
    if not m or not _LICENSE_WORDS.search(m.group(0)):
        return text, False
    body = rest[m.end() :].lstrip("\n")
    return preamble + body, True


@dataclasses.dataclass
class StripBoilerplate(TextStep):
    name: str = "boilerplate"

    def transform(self, text, row, batch, notes):
        new, removed = strip_license_header(text)
        if removed:
            notes["license_headers_removed"] += 1
        return new, None


def config_from_args(args) -> GitHubConfig:
    d = GitHubConfig()
    allowed = tuple(x for x in (args.licenses or ",".join(d.allowed_licenses)).split(",") if x)
    return GitHubConfig(allowed_licenses=allowed, batch_records=args.batch_records or d.batch_records)
