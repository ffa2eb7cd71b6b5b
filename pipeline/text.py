"""Text normalisation, as CCNet does it (cc_net/text_normalizer.py), vectorised with pyarrow.compute.

Two normalisations:
- `normalize_for_dedup`: the key of line-level dedup: strip, lowercase, every digit -> 0, CCNet's
  Unicode punctuation and the non-printing characters removed.
- `normalize_for_lm`: cc_net's `text_normalizer.normalize` (text_normalizer.py:158-173), what the
  perplexity LM is trained and scored on, applied to a whole document: strip, lowercase, accents
  removed (NFD, combining marks dropped), digits -> 0, CCNet's Unicode punctuation mapped to ASCII,
  non-printing characters removed -- newlines too, so a document becomes one line.
"""
from __future__ import annotations

import functools
import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

# CCNet's table of Unicode punctuation and its ASCII replacement.
UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'", "…": "...",
    "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}  # fmt: skip
_NON_PRINTING = "".join(chr(c) for c in list(range(0, 32)) + list(range(127, 160)))
# RE2 character class: the punctuation keys and the non-printing characters (escaped as \x{..}).
_PUNCT_OR_NON_PRINTING = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in list(UNICODE_PUNCT) + list(_NON_PRINTING)) + "]"
_NON_PRINTING_RE2 = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _NON_PRINTING) + "]"
_DIGIT = r"\p{Nd}"


def normalize_for_dedup(lines: pa.Array) -> pa.Array:
    lines = pc.utf8_trim_whitespace(lines)
    lines = pc.utf8_lower(lines)
    lines = pc.replace_substring_regex(lines, _DIGIT, "0")
    return pc.replace_substring_regex(lines, _PUNCT_OR_NON_PRINTING, "")


# One regex pass with a lookup where a character matches: str.translate with a table of non-ASCII
# characters costs ~10x more on web pages (measured on the sample's pages: 73 ms vs 7 ms for 1.6 MB).
_PUNCT_RE = re.compile("[" + re.escape("".join(UNICODE_PUNCT)) + "]")


def _replace_punct(match: re.Match) -> str:
    return UNICODE_PUNCT[match.group()]
_NON_PRINTING_RE = re.compile(f"[{re.escape(_NON_PRINTING)}]")
_DIGIT_RE = re.compile(r"\d")


@functools.cache
def _is_nonspacing_mark(c: str) -> bool:
    return unicodedata.category(c) == "Mn"


def _strip_accents(line: str) -> str:
    """cc_net's strip_accents (NFD, then every character of category Mn removed). A whole document is
    normalised at once, so instead of a Python loop over its characters, the distinct characters are
    classified (cached) and each mark present is removed by one C-level replace."""
    if line.isascii():
        return line
    nfd = unicodedata.normalize("NFD", line)
    for mark in [c for c in set(nfd) if c > "\x7f" and _is_nonspacing_mark(c)]:
        nfd = nfd.replace(mark, "")
    return nfd


def normalize_for_lm(line: str) -> str:
    """A document (or line) for the LM; training and scoring use this same function."""
    line = line.strip().lower()
    line = _strip_accents(line)
    line = _DIGIT_RE.sub("0", line)
    line = _PUNCT_RE.sub(_replace_punct, line)
    return _NON_PRINTING_RE.sub("", line)


def clean_lines(text: str) -> list[str]:
    """Extracted text -> its non-empty lines, each stripped, NUL and other C0 controls but tab removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # The control characters never include "\n": one pass over the whole text, then the split.
    stripped = (line.strip() for line in _CONTROL_RE.sub("", text).split("\n"))
    return [line for line in stripped if line]


_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
