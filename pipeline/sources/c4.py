"""C4 (LLaMA §2.1: "the C4 preprocessing also contains deduplication and language identification
steps: the main difference with CCNet is the quality filtering, which mostly relies on heuristics
such as presence of punctuation marks or the number of words and sentences in a webpage").

    read (JSON lines {"text","timestamp","url"}, gzip or not) -> dedup_in_document -> [line census]
        -> dedup -> language -> c4_quality

Line dedup and language ID are the web pipeline's own steps (`pipeline.dedup`, `pipeline.langid`).
The quality rules are C4's (Raffel et al. 2020, §2.2; TFDS `c4_utils.clean_page`), per line then per
page; the thresholds are `C4Config` fields and are listed in docs/sources.md:

- line: must end in a terminal punctuation mark (. ! ? or a closing quote ");
- line: at least `min_words_per_line` (3) words;
- line: no word longer than `max_word_length` (1000) characters;
- line: no 'javascript' (case-insensitive) - cookie/JS warnings;
- line: no policy boilerplate ('terms of use', 'privacy policy', 'cookie policy', 'uses cookies',
  'use of cookies', 'use cookies');
- line: citation markers '[1]', '[citation needed]', '[edit]' are removed, not the line;
- page: dropped if it contains 'lorem ipsum' (placeholder text);
- page: dropped if it contains a curly bracket (code, not prose);
- page: dropped if fewer than `min_sentences` (5) sentences remain after the line rules.
C4 also drops pages with a word of the LDNOOBW 'bad words' list; that list is not bundled here (no
data is invented), so that rule is not applied.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterator


from pipeline.accounting import StageStats
from pipeline.dedup import ApplyDedup, HashLines
from pipeline.langid import IdentifyLanguage
from pipeline.models import default_lid_path, load_fasttext
from pipeline.sources.common import BatchBuilder, FileOfOtherFormat, TextStep, lines_until_damage, open_maybe_compressed

SOURCE = "c4"
STAGES = ["read", "dedup_in_document", "dedup", "language", "c4_quality"]
GLOBAL = "lines"


@dataclasses.dataclass
class C4Config:
    dedup_policy: str = "keep_first"  # C4 keeps one copy of a repeated span; `remove_all` is CCNet's rule
    dedup_range_bits: int = 4
    languages: tuple[str, ...] | None = ("en",)
    lid_threshold: float = 0.5
    lid_model: str = dataclasses.field(default_factory=lambda: os.fspath(default_lid_path()))
    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    batch_records: int = 256

    def check_models(self) -> None:
        load_fasttext(self.lid_model)

    def before(self) -> list:
        return [HashLines()]

    def after(self) -> list:
        return [
            ApplyDedup(self.dedup_policy),
            IdentifyLanguage(self.lid_model, self.languages, self.lid_threshold),
            C4Quality(min_words_per_line=self.min_words_per_line, max_word_length=self.max_word_length, min_sentences=self.min_sentences),
        ]


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


_TERMINAL = (".", "!", "?", '"')
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_CITATION = re.compile(r"\s*(?:\[\d+\]|\[citation needed\]|\[edit\])", re.I)
# A sentence ends at . ! or ? (possibly followed by closing quotes/brackets) before whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def count_sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text))


@dataclasses.dataclass
class C4Quality(TextStep):
    """C4's line and page rules (module doc). Lines dropped are counted in `notes` by rule."""

    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    name: str = "c4_quality"

    def clean_page(self, text: str, notes) -> tuple[str | None, str | None]:
        lower = text.lower()
        if "lorem ipsum" in lower:
            return None, "c4_lorem_ipsum"
        if "{" in text:
            return None, "c4_curly_bracket"
        kept = []
        for line in text.split("\n"):
            line = _CITATION.sub("", line).strip()
            if not line:
                continue
            low = line.lower()
            words = line.split()
            if not line.endswith(_TERMINAL):
                notes["lines_without_terminal_punctuation"] += 1
            elif len(words) < self.min_words_per_line:
                notes["lines_too_few_words"] += 1
            elif max(len(w) for w in words) > self.max_word_length:
                notes["lines_with_too_long_word"] += 1
            elif "javascript" in low:
                notes["lines_with_javascript"] += 1
            elif any(p in low for p in _POLICY):
                notes["lines_with_policy_text"] += 1
            else:
                kept.append(line)
        page = "\n".join(kept)
        if not kept:
            return None, "c4_no_lines_left"
        if count_sentences(page) < self.min_sentences:
            return None, "c4_too_few_sentences"
        return page, None

    def transform(self, text, row, batch, notes):
        return self.clean_page(text, notes)


def config_from_args(args) -> C4Config:
    d = C4Config()
    languages = args.languages or "en"
    return C4Config(
        dedup_policy=args.dedup or d.dedup_policy,
        languages=None if languages == "all" else tuple(x for x in languages.split(",") if x),
        lid_threshold=args.lid_threshold,
        lid_model=args.lid_model or d.lid_model,
        batch_records=args.batch_records or d.batch_records,
    )
