"""Train the perplexity LM as CCNet did: SentencePiece on normalised Wikipedia text, then a KenLM
5-gram (`lmplz -o 5`) on the SentencePiece pieces, then KenLM's binary format (`build_binary`).

Input: JSON lines (gzip or not) with a `text` field, or plain text files (one paragraph a line).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tempfile
from typing import Iterator

from pipeline.models import tools_bin
from pipeline.runs import file_sha256
from pipeline.text import normalize_for_lm

KENLM_HOW = "run `make tools` (builds lmplz and build_binary from the kenlm 0.3.0 source archive) or set CORPUSMILL_TOOLS"


def kenlm_tool(name: str) -> str:
    path = tools_bin() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"KenLM's {name} not found in {tools_bin()} or on PATH: {KENLM_HOW}")


def iter_texts(path: str) -> Iterator[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        if ".jsonl" in path or ".json" in path:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)["text"]
                    except (ValueError, KeyError, TypeError) as err:
                        raise ValueError(f"{path}: record {n} is not a JSON object with a 'text' field ({err})") from err
        else:
            yield from f


def normalized_lines(paths: list[str]) -> Iterator[str]:
    for path in paths:
        for text in iter_texts(path):
            for line in text.split("\n"):
                line = normalize_for_lm(line)
                if line:
                    yield line


def train_lm(
    inputs: list[str], output_dir: str, language: str, vocab_size: int, order: int = 5, memory: str = "20%"
) -> dict:
    import sentencepiece as spm

    os.makedirs(output_dir, exist_ok=True)
    lmplz, build_binary = kenlm_tool("lmplz"), kenlm_tool("build_binary")
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".tmp-train-lm-") as tmp:
        corpus = os.path.join(tmp, "normalized.txt")
        n_lines = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for line in normalized_lines(inputs):
                f.write(line + "\n")
                n_lines += 1
        if n_lines == 0:
            raise ValueError(f"no text in {', '.join(inputs)}")
        prefix = os.path.join(tmp, f"{language}.sp")
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=prefix,
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=0.9999,
            hard_vocab_limit=False,  # a small corpus may not support the requested size
            normalization_rule_name="identity",  # the text is already normalised (normalize_for_lm)
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        pieces_path = os.path.join(tmp, "pieces.txt")
        n_tokens = 0
        with open(corpus, encoding="utf-8") as src, open(pieces_path, "w", encoding="utf-8") as dst:
            batch: list[str] = []
            for line in src:
                batch.append(line.rstrip("\n"))
                if len(batch) == 4096:
                    n_tokens += _write_pieces(sp, batch, dst)
                    batch = []
            n_tokens += _write_pieces(sp, batch, dst)
        arpa = os.path.join(tmp, f"{language}.arpa")
        with open(pieces_path, "rb") as src, open(arpa, "wb") as dst:
            _run([lmplz, "-o", str(order), "-S", memory, "-T", tmp, "--discount_fallback"], stdin=src, stdout=dst)
        binary = os.path.join(tmp, f"{language}.arpa.bin")
        _run([build_binary, "trie", arpa, binary])  # trie: several times smaller than probing
        for src_name, dst_name in ((prefix + ".model", f"{language}.sp.model"), (prefix + ".vocab", f"{language}.sp.vocab"), (binary, f"{language}.arpa.bin")):
            os.replace(src_name, os.path.join(output_dir, dst_name))
    card = {
        "language": language,
        "inputs": inputs,
        "lines": n_lines,
        "sentencepiece": {"model_type": "unigram", "vocab_size": sp.get_piece_size(), "requested_vocab_size": vocab_size},
        "kenlm": {"order": order, "tokens": n_tokens},
        "sha256": {
            name: file_sha256(os.path.join(output_dir, name)) for name in (f"{language}.sp.model", f"{language}.arpa.bin")
        },
    }
    with open(os.path.join(output_dir, f"{language}.lm.json"), "w") as f:
        json.dump(card, f, indent=2)
    return card


def _write_pieces(sp, batch: list[str], out) -> int:
    if not batch:
        return 0
    n = 0
    for pieces in sp.encode(batch, out_type=str):
        out.write(" ".join(pieces) + "\n")
        n += len(pieces)
    return n


def _run(cmd: list[str], **kw) -> None:
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
