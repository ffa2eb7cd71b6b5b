"""GitHub (LLaMA §2.1: "we kept only projects that are distributed under the Apache, BSD and MIT
licenses. Additionally, we filtered low quality files with heuristics based on the line length or
proportion of alphanumeric characters, and removed boilerplate, such as headers, with regular
expressions. Finally, we deduplicate the resulting dataset at the file level, with exact matches.")

    read -> license -> skip_files -> hash_content -> [file census] -> exact_dedup -> boilerplate
        -> code_quality

RedPajama v1's pipeline (data_prep/github, rp_v1), step for step, in its order:
- license: the BigQuery query keeps `license LIKE 'mit%' OR 'bsd%' OR 'apache%'` (README.md:38-40):
  a licence is allowed when its id starts with one of `allowed_licenses` (mit, bsd, apache), in any
  case, so BigQuery's `mit`, `apache-2.0`, `bsd-3-clause` and SPDX's `MIT`, `Apache-2.0` pass. An
  SPDX expression is evaluated (`A OR B`: one side allowed; `A AND B`: both);
- skip_files: `.crt` certificates and a file whose path is `LICENSE` are skipped
  (github_clean_dedup_local.py:105-110);
- exact dedup: on the file's content as read, before any cleaning (github_clean_dedup_local.py:113,
  github_global_dedup.py): the first file in input order stays, the others go as `duplicate_file`;
- boilerplate: github_clean_dedup_local.py's `clean_copyright_comments` (:19-59): the first
  `/* ... */` block of the file is cut if it mentions "copyright" (and then nothing else is done);
  a file with no such block loses its leading run of lines starting with `//`, `#`, `--` or empty;
- code_quality (github_run_filter.py:40-72): empty (`empty`); path not ending in one of the
  `EXTENSIONS` (`extension`); longest line > 1000 (`long_line`); mean line length > 100
  (`long_mean_line`); alphanumeric share < 0.25 (`low_alnum`); alphabetic characters per token
  < 1.5 (`low_alpha_per_token`, only with a tokenizer: RedPajama counts Pythia's BPE tokens, which
  are not bundled; `tokenizer_model` takes a SentencePiece model instead).

Inputs, either:
- JSON lines (gzip or not) of {"repo_name" (or "repo"), "path", "license", "content"}, one file each
  (the BigQuery `github_repos` export / the shared corpus layout); or
- a directory: a checkout of one repository (files under it, `.git` skipped); its licence is
  recognised from the LICENSE / LICENCE / COPYING file at its root by the regular expressions below.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.runs import InputError, read_bytes
from pipeline.dedup import ApplyDedup
from pipeline.sources.common import BatchBuilder, FileOfOtherFormat, HashContent, lines_until_damage, open_maybe_compressed
from pipeline.step import Outcome, Step, TextStep

SOURCE = "github"
STAGES = ["read", "license", "skip_files", "hash_content", "exact_dedup", "boilerplate", "code_quality"]
GLOBAL = "exact"
ALLOWED = ("mit", "bsd", "apache")  # prefixes, any case: RedPajama's query (README.md:38-40)
# github_run_filter.py:18-28, in its order; a path must end with one of them (case-sensitive)
EXTENSIONS = (".asm", ".bat", ".cmd", ".c", ".h", ".cs", ".cpp", ".hpp", ".c++", ".h++", ".cc", ".hh", ".C", ".H",
              ".cmake", ".css", ".dockerfile", ".f90", ".f", ".f03", ".f08", ".f77", ".f95", ".for", ".fpp", ".go", ".hs",
              ".html", ".java", ".js", ".jl", ".lua", ".md", ".markdown", ".php", ".php3", ".php4", ".php5",
              ".phps", ".phpt", ".pl", ".pm", ".pod", ".perl", ".ps1", ".psd1", ".psm1", ".py", ".rb", ".rs", ".sql",
              ".scala", ".sh", ".bash", ".command", ".zsh", ".ts", ".tsx", ".tex", ".vb", "Dockerfile", "Makefile",
              ".xml", ".rst", ".m", ".smali")
EXTRA_FIELDS = [pa.field("_license", pa.string()), pa.field("_path", pa.string())]


@dataclasses.dataclass
class GitHubConfig:
    allowed_licenses: tuple[str, ...] = ALLOWED
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    min_alpha_per_token: float = 1.5
    tokenizer_model: str | None = None  # a SentencePiece model; None: the alpha-per-token rule is off
    max_file_bytes: int = 1 << 20  # a file bigger than 1 MiB is data or generated, not code
    batch_records: int = 256

    def check_models(self) -> None:
        pass

    def before(self) -> list:
        return [LicenseFilter(self.allowed_licenses), SkipFiles(), HashContent()]

    def after(self) -> list:
        return [
            ApplyDedup(name="exact_dedup", reason="duplicate_file"),  # built with the census's drops by the executor
            StripBoilerplate(),
            CodeQuality(self.max_line_length, self.max_mean_line_length, self.min_alnum_fraction,
                        self.min_alpha_per_token, self.tokenizer_model),
        ]


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
        full = builder.add(record, f"{repo}/{file_path}", content, url=f"https://github.com/{repo}/blob/HEAD/{file_path}", metadata=meta, _license=license_, _path=file_path)
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
    """Evaluates a licence id or SPDX expression ('mit', 'MIT OR Apache-2.0', '(MIT AND BSD-3-Clause)')
    against the allowed prefixes (any case): OR needs one allowed side, AND both. Empty -> not allowed."""
    prefixes = tuple(p.lower() for p in allowed)
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
        ok = tok.lower().startswith(prefixes)
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
class LicenseFilter(Step):
    allowed: tuple[str, ...] = ALLOWED
    name: str = "license"

    def process(self, batch, notes):
        licenses = batch.column("_license").to_pylist()
        verdict = {lic: license_allowed(lic, self.allowed) for lic in set(licenses)}
        return Outcome(drop=np.array([not verdict[lic] for lic in licenses]), reason="license", remove=("_license",))


@dataclasses.dataclass
class SkipFiles(Step):
    """Certificates and the repository's LICENSE file are not code (github_clean_dedup_local.py:105-110)."""

    name: str = "skip_files"

    def process(self, batch, notes):
        paths = batch.column("_path").to_pylist()
        return Outcome(drop=[("certificate" if p.endswith(".crt") else "license_file" if p == "LICENSE" else None) for p in paths])


def file_stats(text: str) -> tuple[int, float, float]:
    """(longest line, mean line length, alphanumeric share) as github_clean_dedup_local.py:62-89 has
    them: lines by str.splitlines, mean = characters / lines, share of str.isalnum characters."""
    lengths = [len(line) for line in text.splitlines()]
    if not lengths:
        return 0, 0.0, 0.0
    return max(lengths), len(text) / len(lengths), sum(c.isalnum() for c in text) / len(text)


@dataclasses.dataclass
class CodeQuality(Step):
    """github_run_filter.py's `discard_record` (:40-72), rule for rule, first failing rule named."""

    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    min_alpha_per_token: float = 1.5
    tokenizer_model: str | None = None
    name: str = "code_quality"

    def reason(self, text: str, path: str, tokenizer) -> str | None:
        if not text:
            return "empty"
        if not path.endswith(EXTENSIONS):
            return "extension"
        longest, mean, alnum = file_stats(text)
        if longest > self.max_line_length:
            return "long_line"
        if mean > self.max_mean_line_length:
            return "long_mean_line"
        if alnum < self.min_alnum_fraction:
            return "low_alnum"
        if tokenizer is not None:
            tokens = len(tokenizer.encode(text))
            if sum(c.isalpha() for c in text) / max(tokens, 1) < self.min_alpha_per_token:
                return "low_alpha_per_token"
        return None

    def process(self, batch, notes):
        tokenizer = _sentencepiece(self.tokenizer_model) if self.tokenizer_model else None
        texts, paths = batch.column("text").to_pylist(), batch.column("_path").to_pylist()
        return Outcome(drop=[self.reason(t, p, tokenizer) for t, p in zip(texts, paths)], remove=("_path",))


_TOKENIZERS: dict = {}


def _sentencepiece(path: str):
    if path not in _TOKENIZERS:
        import sentencepiece

        _TOKENIZERS[path] = sentencepiece.SentencePieceProcessor(model_file=path)
    return _TOKENIZERS[path]


_BLOCK_COMMENT = re.compile(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/")  # github_clean_dedup_local.py:20
_COPYRIGHT = re.compile("copyright", re.I)
_COMMENT_OR_EMPTY = ("//", "#", "--")


def strip_license_header(text: str) -> tuple[str, bool]:
    """github_clean_dedup_local.py's `clean_copyright_comments`: (new text, whether it changed)."""
    block = _BLOCK_COMMENT.search(text)
    if block:  # a file with a C block comment: only that block can go, and only if it names copyright
        if _COPYRIGHT.search(block.group(0)):
            return text[: block.start()] + text[block.end() :], True
        return text, False
    lines = text.split("\n")
    skip = 0
    while skip < len(lines) and (not lines[skip] or lines[skip].startswith(_COMMENT_OR_EMPTY)):
        skip += 1
    return ("\n".join(lines[skip:]), True) if skip else (text, False)


@dataclasses.dataclass
class StripBoilerplate(TextStep):
    name: str = "boilerplate"

    def transform(self, text, row, batch, notes):
        new, removed = strip_license_header(text)
        if removed:
            notes["headers_removed"] += 1
        return new, None


def config_from_args(args) -> GitHubConfig:
    d = GitHubConfig()
    allowed = tuple(x for x in (getattr(args, "licenses", None) or ",".join(d.allowed_licenses)).split(",") if x)
    return GitHubConfig(
        allowed_licenses=allowed,
        tokenizer_model=getattr(args, "github_tokenizer", None),
        batch_records=getattr(args, "batch_records", None) or d.batch_records,
    )
