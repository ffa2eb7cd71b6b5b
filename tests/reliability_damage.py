"""Seeded damage of real files, and what a reader must make of it (tests/test_reliability_fuzz.py).

A case damages a file's bytes (a truncation, byte flips, a hole cut out) and says which bytes of the
*content* it touched: the file's own bytes for a plain file; for a gzip or bz2 file everything from
the first content byte that the damaged file can no longer give back (the longest prefix any decoder
can recover, found by feeding the decompressor a byte at a time near the damage).

A record is *damaged* when the touched bytes overlap its span, which reaches to the separators on
both sides (a JSON line's two newlines; an XML record up to the next record's start tag): damage at a
boundary touches both neighbours. Every other record that the undamaged file gave is *intact* and
must come out of the damaged file unchanged: `lost` counts those that do not, and must be 0.
"""
from __future__ import annotations

import bz2
import dataclasses
import random
import re
import zlib

INF = float("inf")

# (kind, seed): 4 truncations, 4 single byte flips, 2 x 5 byte flips, 3 holes.
CASES = [("truncate", s) for s in range(4)] + [("flip", s) for s in range(4)] + [("flips", s) for s in range(2)] + [("hole", s) for s in range(3)]
# The slow run: 85 more cases per file, other seeds.
MORE_CASES = ([("truncate", s) for s in range(100, 120)] + [("flip", s) for s in range(100, 140)] + [("flips", s) for s in range(100, 110)]
              + [("hole", s) for s in range(100, 115)])


def damage(data: bytes, kind: str, seed: int) -> tuple[bytes, list[tuple[float, float]]]:
    """The damaged bytes and the touched intervals of `data` (half-open, in its coordinates)."""
    rng = random.Random(f"{kind}-{seed}-{len(data)}")
    n = len(data)
    if kind == "truncate":
        cut = rng.randrange(1, n)
        return data[:cut], [(cut - 1, INF)]
    if kind in ("flip", "flips"):
        out = bytearray(data)
        spots = sorted(rng.sample(range(n), 1 if kind == "flip" else 5))
        for p in spots:
            out[p] ^= rng.randrange(1, 256)
        return bytes(out), [(p, p + 1) for p in spots]
    if kind == "hole":
        p = rng.randrange(0, n - 1)
        q = min(n, p + rng.randint(1, 4096))
        return data[:p] + data[q:], [(p - 1, q + 1)]  # the bytes joined across the hole are touched too
    raise ValueError(kind)


def recoverable_prefix(damaged: bytes, compression: str) -> bytes:
    """The longest decompressed prefix that the damaged file still gives (a decoder can do no better)."""
    out = []
    if compression == "gz":
        d = zlib.decompressobj(31)
        for i in range(0, len(damaged), 4096):
            chunk, saved = damaged[i : i + 4096], d.copy()
            try:
                out.append(d.decompress(chunk))
            except zlib.error:
                d = saved
                for b in range(len(chunk)):  # the output of the bytes before the damage
                    try:
                        out.append(d.decompress(chunk[b : b + 1]))
                    except zlib.error:
                        return b"".join(out)
            if d.eof:
                break
        return b"".join(out)
    d = bz2.BZ2Decompressor()
    for i in range(0, len(damaged), 1024):
        try:
            out.append(d.decompress(damaged[i : i + 1024]))
        except (OSError, EOFError):
            break
        if d.eof:
            break
    return b"".join(out)


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on equal prefixes
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def content_touched(original_content: bytes, damaged_file: bytes, file_touched, compression: str | None):
    """The touched intervals in content coordinates."""
    if compression is None:
        return file_touched
    k = common_prefix(recoverable_prefix(damaged_file, compression), original_content)
    return [] if k == len(original_content) else [(k, INF)]


def line_spans(content: bytes) -> list[tuple[int, int]]:
    """Span of line i (record i of a JSON lines reader), with the newline before and after it."""
    spans, start = [], 0
    for line in content.splitlines(keepends=True):
        spans.append((max(0, start - 1), start + len(line) + 1))
        start += len(line)
    return spans


def xml_spans(content: bytes, root: str, tag: str) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """(header span, span of record i): from its start tag to the end of the next one."""
    starts = [m.start() for m in re.finditer(b"<" + tag.encode() + rb"[\s/>]", content)]
    end = re.search(b"</" + root.encode() + rb"\s*>", content)
    bounds = starts + [end.start() if end else len(content)]
    width = len(tag) + 2
    return (0, starts[0] + width), [(bounds[i], bounds[i + 1] + width) for i in range(len(starts))]


def touches(span, intervals) -> bool:
    a, b = span
    return any(p < b and a < q for p, q in intervals)


@dataclasses.dataclass
class Tally:
    """What one format's cases did, for docs/reliability.md."""

    cases: int = 0
    records: int = 0  # records of the undamaged file, over all cases
    damaged: int = 0  # of those, touched by the damage
    damaged_unchanged: int = 0  # damaged records that still came out unchanged
    changed: int = 0  # records that came out, but not as any record of the undamaged file (a flip inside them)
    dead_letters: int = 0
    lost: int = 0  # intact records that did not come out unchanged: must be 0

    HEADER = ("| format | cases | records (all cases) | damaged | intact, kept | damaged, kept unchanged | kept changed | dead letters | lost |\n"
              "|---|---|---|---|---|---|---|---|---|")

    def row(self, name: str) -> str:
        return (f"| {name} | {self.cases} | {self.records} | {self.damaged} | {self.records - self.damaged - self.lost} "
                f"| {self.damaged_unchanged} | {self.changed} | {self.dead_letters} | {self.lost} |")
