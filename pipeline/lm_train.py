"""Train the perplexity LM as cc_net did (cc_net/Makefile:92-123, cc_net/get_wiki_cirrus.py:51-64 at
bda555b): each Wikipedia document normalised whole (`normalize_for_lm`, cc_net's
`text_normalizer.normalize`), one document a line; SentencePiece (unigram, cc_net's spm_train flags:
hard vocabulary limit, character coverage 0.9995, SentencePiece's default nmt_nfkc normalisation)
on those lines; the lines encoded to pieces; a KenLM 5-gram (`lmplz -o 5 --vocab_estimate <vocab>
--discount_fallback`) on the pieces; KenLM's binary format (`build_binary`).

Input: documents (`pipeline.textio`: JSON lines with a `text` field, .txt one document a line, or
Parquet shards, e.g. `corpusmill source wikipedia`); cc_net used the first 1,000,000 documents
(`NDOC_FOR_LM`), and so do we.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Iterator

from pipeline.models import tools_bin
from pipeline.runs import atomic_write_bytes, file_sha256
from pipeline.text import normalize_for_lm
from pipeline.textio import iter_documents

KENLM_HOW = "run `make tools` (builds lmplz and build_binary from the kenlm 0.3.0 source archive) or set CORPUSMILL_TOOLS"
MAX_DOCUMENTS = 1_000_000  # cc_net/Makefile:14 NDOC_FOR_LM
CHARACTER_COVERAGE = 0.9995  # cc_net/Makefile:101


def kenlm_tool(name: str) -> str:
    path = tools_bin() / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"KenLM's {name} not found in {tools_bin()} or on PATH: {KENLM_HOW}")


def normalized_documents(paths: list[str], max_documents: int = MAX_DOCUMENTS, counts: dict | None = None) -> Iterator[str]:
    """The training lines: one normalised document each (documents empty after normalisation skipped,
    and counted in `counts` with the documents read)."""
    counts = {} if counts is None else counts
    n = 0
    for path in paths:
        for doc in iter_documents(path):
            counts["read"] = counts.get("read", 0) + 1
            line = normalize_for_lm(doc["text"] or "")
            if not line:
                counts["empty_after_normalization"] = counts.get("empty_after_normalization", 0) + 1
            if line:
                yield line
                n += 1
                if n >= max_documents:
                    return


def train_lm(
    inputs: list[str], output_dir: str, language: str, vocab_size: int, order: int = 5, memory: str = "20%",
    max_documents: int = MAX_DOCUMENTS, counts: dict | None = None, work=None,
) -> dict:
    """Trains and writes OUTPUT_DIR/<language>.sp.model, .sp.vocab, .arpa.bin and .lm.json.

    `work` (a `pipeline.plan.Work`, from `corpusmill train-lm`'s job convention): the intermediates
    (normalised text, SentencePiece model, pieces, ARPA, binary) are kept in the work folder with a
    completion marker each, so a rerun after a kill starts at the first step not done. Without it, a
    temporary folder in OUTPUT_DIR that goes when the call ends."""
    os.makedirs(output_dir, exist_ok=True)
    lmplz, build_binary = kenlm_tool("lmplz"), kenlm_tool("build_binary")
    if work is None:
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=SCRATCH_PREFIX) as tmp:
            return _train(inputs, output_dir, language, vocab_size, order, memory, max_documents, counts, tmp, None, lmplz, build_binary)
    # The scratch folders a killed run without a work folder left (a run's own scratch is in its work folder).
    for name in os.listdir(output_dir):
        if name.startswith(SCRATCH_PREFIX) and os.path.isdir(os.path.join(output_dir, name)):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    scratch = work.path("lm")
    os.makedirs(scratch, exist_ok=True)
    return _train(inputs, output_dir, language, vocab_size, order, memory, max_documents, counts, scratch, work, lmplz, build_binary)


SCRATCH_PREFIX = ".tmp-train-lm-"
MARKERS = "lm"  # work.load(MARKERS, step): normalize, sentencepiece, pieces, arpa, binary


def _step(work, name: str, run) -> dict:
    """`run()` once per run: with a work folder, a step whose marker exists is not run again (its
    files are in the scratch folder, complete: the marker is written after them)."""
    done = work.load(MARKERS, name) if work is not None else None
    if done is None:
        done = run() or {}
        if work is not None:
            work.save(MARKERS, name, done)
    return done


def _publish(src: str, dst: str) -> None:
    """The finished intermediate into OUTPUT under its name, atomically; the work copy stays until the
    work folder goes, so a kill between two of these leaves a rerun everything it needs."""
    tmp = os.path.join(os.path.dirname(dst), f".tmp-{os.getpid()}-{os.path.basename(dst)}")
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    try:
        os.link(src, tmp)  # same file system (the work folder is inside OUTPUT): no copy
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _train(inputs, output_dir, language, vocab_size, order, memory, max_documents, counts, tmp, work, lmplz, build_binary) -> dict:
    import sentencepiece as spm

    from tokenizer import spm as spm_lib

    counts = {} if counts is None else counts
    corpus = os.path.join(tmp, "normalized.txt")

    def normalize():
        n_lines, seen = 0, {}
        with open(corpus, "w", encoding="utf-8") as f:
            for line in normalized_documents(inputs, max_documents, seen):
                f.write(line + "\n")
                n_lines += 1
        if n_lines == 0:
            raise ValueError(f"no text in {', '.join(inputs)}")
        return {"documents": n_lines, "counts": seen}

    normalized = _step(work, "normalize", normalize)
    n_lines = normalized["documents"]
    counts.update(normalized["counts"])
    prefix = os.path.join(tmp, f"{language}.sp")

    def sentencepiece():
        try:
            spm.SentencePieceTrainer.train(
                input=corpus,
                model_prefix=prefix,
                vocab_size=vocab_size,
                hard_vocab_limit=True,
                character_coverage=CHARACTER_COVERAGE,
                model_type="unigram",
                num_threads=os.cpu_count() or 1,
                minloglevel=2,
            )
        except RuntimeError as err:  # e.g. "Vocabulary size is too high (65536). Please set it to a value <= 9071."
            raise ValueError(
                f"SentencePiece cannot train a {vocab_size}-piece vocabulary on {n_lines} documents of "
                f"{', '.join(inputs)}: {err} (pass a smaller --vocab-size)"
            ) from err
        # The trainer records its input and output paths in the model; they are scratch paths (random
        # without a work folder, the fingerprint's with one): record names only, so that the model's
        # bytes depend on the training text alone.
        proto = spm_lib.model_proto(prefix + ".model")
        del proto.trainer_spec.input[:]
        proto.trainer_spec.input.append(os.path.basename(corpus))
        proto.trainer_spec.model_prefix = f"{language}.sp"
        with open(prefix + ".model", "wb") as f:
            f.write(proto.SerializeToString(deterministic=True))

    _step(work, "sentencepiece", sentencepiece)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    pieces_path = os.path.join(tmp, "pieces.txt")

    def pieces():
        n_tokens = 0
        with open(corpus, encoding="utf-8") as src, open(pieces_path, "w", encoding="utf-8") as dst:
            batch: list[str] = []
            for line in src:
                batch.append(line.rstrip("\n"))
                if len(batch) == 4096:
                    n_tokens += _write_pieces(sp, batch, dst)
                    batch = []
            n_tokens += _write_pieces(sp, batch, dst)
        return {"tokens": n_tokens}

    n_tokens = _step(work, "pieces", pieces)["tokens"]
    arpa = os.path.join(tmp, f"{language}.arpa")

    def kenlm():
        with open(pieces_path, "rb") as src, open(arpa, "wb") as dst:
            _run([lmplz, "-o", str(order), "-S", memory, "-T", tmp, "--vocab_estimate", str(vocab_size), "--discount_fallback"],
                 stdin=src, stdout=dst)

    _step(work, "arpa", kenlm)
    binary = os.path.join(tmp, f"{language}.arpa.bin")
    _step(work, "binary", lambda: _run([build_binary, "trie", arpa, binary]))  # trie: several times smaller than probing
    for src_name, dst_name in ((prefix + ".model", f"{language}.sp.model"), (prefix + ".vocab", f"{language}.sp.vocab"), (binary, f"{language}.arpa.bin")):
        _publish(src_name, os.path.join(output_dir, dst_name))
    card = {
        "language": language,
        "inputs": inputs,
        "documents": n_lines,
        "normalization": "cc_net text_normalizer.normalize, whole document, one document a line",
        "sentencepiece": {"model_type": "unigram", "vocab_size": sp.get_piece_size(), "character_coverage": CHARACTER_COVERAGE,
                          "normalization_rule_name": "nmt_nfkc"},
        "kenlm": {"order": order, "tokens": n_tokens},
        "sha256": {
            name: file_sha256(os.path.join(output_dir, name)) for name in (f"{language}.sp.model", f"{language}.arpa.bin")
        },
    }
    atomic_write_bytes(os.path.join(output_dir, f"{language}.lm.json"), json.dumps(card, indent=2).encode())
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
