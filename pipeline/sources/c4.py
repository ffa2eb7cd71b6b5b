"""C4 (LLaMA §2.1: "the C4 preprocessing also contains deduplication and language identification
steps: the main difference with CCNet is the quality filtering, which mostly relies on heuristics
such as presence of punctuation marks or the number of words and sentences in a webpage").

    read (JSON lines {"text","timestamp","url"}, gzip or not) -> c4_clean_page -> dedup_in_document
        -> [line census] -> dedup -> c4_deduped_page -> language

Two rule sets (`C4Config.rules`, `--c4-rules`):

- `released` (default): RedPajama v1 took the released C4 (allenai/c4 `en`) as it is
  (data_prep/c4/c4_reformat.py:21-30 only renames fields), so every record is kept unchanged: the
  stages run but change nothing (the language stage only records lid.176's label and score unless
  `--languages` asks it to filter).
- `raw-pages`: C4's own rules for raw Common Crawl pages, as TFDS's c4_utils.py has them (the commit
  and lines are in docs/fidelity-sources.md), in TFDS's order:
  1. page: longer than `max_page_chars` (1.9e5) -> `c4_too_long` (`is_valid_length`);
  2. each line (`clean_page`), stripped: a word longer than 1000 characters drops the line; citation
     markers `[n]`, `[edit]`, `[citation needed]` are cut out; the line must end in . ? ! or " and
     not in "..."; it needs >= 5 words; "lorem ipsum" drops the page (`c4_lorem_ipsum`); "javascript"
     drops the line; a `{` drops the page (`c4_curly_bracket`); policy text ("terms of use",
     "privacy policy", ...) drops the line; a word of the LDNOOBW list (data/badwords) flanked by
     non-letters drops the page (`c4_badword`); then the page needs >= 3 sentences
     (`c4_too_few_sentences`);
  3. line dedup over all pages (`remove_duplicate_text`): a line is keyed by its stripped, lower-cased
     text; one copy of each stays (the first page by `_ord`; `--dedup remove_all` drops every copy),
     repeats inside a page go too; a page left empty (`all_lines_duplicate`) or with < 3 sentences
     (`c4_too_few_sentences_after_dedup`) goes;
  4. language: English only (`--languages en`, lid.176 at `--lid-threshold`).
  Sentences are counted without NLTK's punkt (not in the pinned set): end marks . ! ? (with closing
  quotes/brackets) before whitespace or the end, at least one per non-empty line, as punkt finds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline.accounting import StageStats
from pipeline.dedup import ApplyDedup
from pipeline.langid import IdentifyLanguage
from pipeline.models import default_lid_path, load_fasttext
from pipeline.sources.common import BatchBuilder, FileOfOtherFormat, lines_until_damage, open_maybe_compressed
from pipeline.step import Outcome, Step, TextStep

SOURCE = "c4"
STAGES = ["read", "c4_clean_page", "dedup_in_document", "dedup", "c4_deduped_page", "language"]
GLOBAL = "lines"
RULES = ("released", "raw-pages")
BADWORDS = Path(__file__).resolve().parents[2] / "data" / "badwords" / "ldnoobw-en.txt"


@dataclasses.dataclass
class C4Config:
    rules: str = "released"
    dedup_policy: str = "keep_first"  # C4 keeps one copy of a repeated line; `remove_all` is CCNet's rule
    languages: tuple[str, ...] | None = None  # None keeps every language; raw-pages: ("en",) from the CLI
    lid_threshold: float = 0.5
    lid_model: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    min_words_per_line: int = 5
    max_word_length: int = 1000
    min_sentences: int = 3
    max_page_chars: int = 190_000
    badwords: str = os.fspath(BADWORDS)
    batch_records: int = 256

    def __post_init__(self):
        if self.rules not in RULES:
            raise ValueError(f"unknown C4 rules {self.rules!r}: one of {', '.join(RULES)}")
        if self.dedup_policy not in ("keep_first", "remove_all"):
            raise ValueError(f"unknown dedup policy {self.dedup_policy!r}: keep_first or remove_all")

    @property
    def raw_pages(self) -> bool:
        return self.rules == "raw-pages"

    def check_models(self) -> None:
        load_fasttext(self.lid_model)
        if self.raw_pages:
            load_badwords(self.badwords)

    def before(self) -> list:
        if not self.raw_pages:
            return [Unchanged("c4_clean_page"), C4HashLines(enabled=False)]
        clean = C4CleanPage(self.min_words_per_line, self.max_word_length, self.min_sentences, self.max_page_chars, self.badwords)
        return [clean, C4HashLines()]

    def after(self) -> list:
        # The executor may put its own line-dedup step first (same rule); the page rule after it is ours.
        dedup = ApplyDedup()  # the executor builds it with this file's drops from the census (pipeline.sources.plan)
        deduped = C4DedupedPage(self.min_sentences) if self.raw_pages else Unchanged("c4_deduped_page")
        threshold = self.lid_threshold if self.languages is not None else 0.0  # no filter: label only
        return [dedup, deduped, IdentifyLanguage(self.lid_model, self.languages, threshold)]


def read(path: str, file_index: int, stats: StageStats, dead: list[dict], config: C4Config) -> Iterator:
    """One document per JSON line; a line that is not a JSON object with a string "text" is a
    `malformed_record` with a dead letter naming file and line; damaged compression ends the file with
    one dead letter, the lines before it kept; a file with no such line at all is one dead letter."""
    builder = BatchBuilder(SOURCE, file_index, config.batch_records)
    other_format = FileOfOtherFormat(stats, dead, path)
    with open_maybe_compressed(path) as f:
        for record, raw in lines_until_damage(f, path, stats, dead):
            if not raw.strip():
                stats.notes["blank_lines"] += 1
                continue
            stats.docs_in += 1
            try:
                obj = json.loads(raw)
                text = obj["text"]
                if not isinstance(text, str):
                    raise TypeError(f'"text" is {type(text).__name__}, not a string')
            except (ValueError, KeyError, TypeError) as err:
                stats.drop("malformed_record")
                dead.append({"file": path, "record": record, "reason": "malformed_record", "error": f"{type(err).__name__}: {err}"[:500]})
                continue
            stats.docs_out += 1
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            url = obj.get("url")
            meta = {"timestamp": obj.get("timestamp"), "file": os.path.basename(path), "line": record}
            full = builder.add(record, url or f"{path}:{record}", text, url=url, metadata=meta)
            if full:
                yield full
    other_format.close("C4 JSON lines")
    last = builder.flush()
    if last:
        yield last


_END_MARKS = (".", "?", "!", '"')
_ELLIPSIS = "..."
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
# A sentence ends at . ! or ? (possibly followed by closing quotes/brackets) before whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def count_sentences(text: str) -> int:
    """Sentences of a text, line by line: its end marks, and at least one for a non-empty line."""
    return sum(max(1, len(_SENTENCE_END.findall(line))) for line in text.split("\n") if line.strip())


_BADWORD_PATTERNS: dict = {}


def load_badwords(path: str) -> re.Pattern:
    """The LDNOOBW list as C4's regex: a listed word or phrase with a non-letter on each side."""
    if path not in _BADWORD_PATTERNS:
        with open(path, encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
        if not words:
            raise ValueError(f"{path}: empty bad-words list")
        _BADWORD_PATTERNS[path] = re.compile("[^a-z](" + "|".join(map(re.escape, words)) + ")[^a-z]")
    return _BADWORD_PATTERNS[path]


@dataclasses.dataclass
class Unchanged(Step):
    """A stage of the other rule set that keeps every document as it is (released C4)."""

    name: str = "c4_clean_page"

    def process(self, batch, notes):
        return Outcome()


@dataclasses.dataclass
class C4CleanPage(TextStep):
    """TFDS's is_valid_length and clean_page (module doc, step 1-2); lines dropped counted by rule."""

    min_words_per_line: int = 5
    max_word_length: int = 1000
    min_sentences: int = 3
    max_page_chars: int = 190_000
    badwords: str = os.fspath(BADWORDS)
    name: str = "c4_clean_page"

    def clean_page(self, text: str, notes) -> tuple[str | None, str | None]:
        if len(text) > self.max_page_chars:
            return None, "c4_too_long"
        badwords = load_badwords(self.badwords) if self.badwords else None
        kept, sentences = [], 0
        for line in text.splitlines():
            line = line.strip()
            if any(len(w) > self.max_word_length for w in line.split()):
                notes["lines_with_too_long_word"] += 1
                continue
            line = _CITATION.sub("", line)
            if not line.endswith(_END_MARKS) or line.endswith(_ELLIPSIS):
                notes["lines_without_end_mark"] += 1
                continue
            if len(line.split()) < self.min_words_per_line:
                notes["lines_too_short"] += 1
                continue
            lower = line.lower()
            if "lorem ipsum" in lower:
                return None, "c4_lorem_ipsum"
            if "javascript" in lower:
                notes["lines_with_javascript"] += 1
                continue
            if "{" in line:
                return None, "c4_curly_bracket"
            if any(p in lower for p in _POLICY):
                notes["lines_with_policy_text"] += 1
                continue
            if badwords is not None and badwords.search(lower):
                return None, "c4_badword"
            sentences += count_sentences(line)
            kept.append(line)
        if sentences < self.min_sentences:
            return None, "c4_too_few_sentences"
        return "\n".join(kept).strip(), None

    def transform(self, text, row, batch, notes):
        return self.clean_page(text, notes)


def _line_key(line: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(line.strip().lower().encode("utf-8"))


@dataclasses.dataclass
class C4HashLines(Step):
    """Adds `_line_hashes` (C4's line key: stripped, lower-cased, hashed) and drops a line's repeats
    inside its page (TFDS's local duplicates). Disabled (released C4): no hashes, text unchanged."""

    enabled: bool = True
    name: str = "dedup_in_document"

    def process(self, batch, notes):
        texts, hashes = batch.column("text").to_pylist(), []
        if self.enabled:
            for i, text in enumerate(texts):
                seen, kept, keys = set(), [], []
                for line in text.split("\n"):
                    key = _line_key(line)
                    if key in seen:
                        notes["lines_repeated_in_page"] += 1
                        continue
                    seen.add(key)
                    kept.append(line)
                    keys.append(key)
                texts[i] = "\n".join(kept)
                hashes.append(keys)
        else:
            hashes = [[] for _ in texts]
        return Outcome(text=texts, columns={"_line_hashes": pa.array(hashes, pa.list_(pa.uint64()))})


@dataclasses.dataclass
class C4DedupedPage(Step):
    """A page that line dedup left with fewer than `min_sentences` sentences goes (TFDS's
    _remove_lines_from_text)."""

    min_sentences: int = 3
    name: str = "c4_deduped_page"

    def process(self, batch, notes):
        few = np.array([count_sentences(t) < self.min_sentences for t in batch.column("text").to_pylist()])
        return Outcome(drop=few, reason="c4_too_few_sentences_after_dedup")


def config_from_args(args) -> C4Config:
    d = C4Config()
    rules = getattr(args, "c4_rules", None) or d.rules
    languages = getattr(args, "languages", None) or ("en" if rules == "raw-pages" else "all")
    return C4Config(
        rules=rules,
        dedup_policy=getattr(args, "dedup", None) or d.dedup_policy,
        languages=None if languages == "all" else tuple(x for x in languages.split(",") if x),
        lid_threshold=getattr(args, "lid_threshold", None) if getattr(args, "lid_threshold", None) is not None else d.lid_threshold,
        lid_model=getattr(args, "lid_model", None) or d.lid_model,
        batch_records=getattr(args, "batch_records", None) or d.batch_records,
    )
