"""Encoding documents into token arrays: batched SentencePiece (threads in C++), numpy assembly.

Empty documents and documents that are only whitespace are counted and not written: they would be
`[BOS, EOS]` (or a lone dummy-prefix piece) and teach a model nothing.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sentencepiece as spm

from pipeline.accounting import StageStats


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    add_bos: bool = True
    add_eos: bool = True
    threads: int = 1


def blank_masks(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(empty, whitespace_only) boolean masks, vectorised."""
    texts = texts.fill_null("")
    empty = pc.equal(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False)
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0).to_numpy(zero_copy_only=False)
    return empty, blank & ~empty


def encode_batch(sp: spm.SentencePieceProcessor, texts: pa.Array, config: EncodeConfig, stage: str = "tokenize"
                 ) -> tuple[np.ndarray, np.ndarray, StageStats]:
    """Tokens (uint16, documents back to back with BOS/EOS) and per-document lengths of the kept documents."""
    stats = StageStats(stage)
    stats.docs_in = len(texts)
    stats.chars_in = int(pc.sum(pc.utf8_length(texts.fill_null(""))).as_py() or 0)
    empty, blank = blank_masks(texts)
    stats.drop("empty", int(empty.sum()))
    stats.drop("whitespace_only", int(blank.sum()))
    keep = ~(empty | blank)
    kept = texts.filter(pa.array(keep)).to_pylist() if not keep.all() else texts.to_pylist()
    stats.docs_out = len(kept)
    stats.chars_out = sum(map(len, kept))
    if not kept:
        return np.zeros(0, np.uint16), np.zeros(0, np.int64), stats
    encoded = sp.encode(kept, return_type="numpy", num_threads=config.threads)
    n_special = int(config.add_bos) + int(config.add_eos)
    content = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    lengths = content + n_special
    # One concatenation of the encoded documents, scattered around the BOS/EOS slots.
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    special = np.zeros(len(tokens), dtype=bool)
    if config.add_bos:
        tokens[starts] = sp.bos_id()
        special[starts] = True
    if config.add_eos:
        tokens[ends - 1] = sp.eos_id()
        special[ends - 1] = True
    tokens[~special] = np.concatenate(encoded)
    return tokens, lengths, stats
