"""SentencePiece BPE training with the LLaMA tokenizer's trainer_spec, and the model file's protobuf.

`LLAMA_TRAINER_SPEC` is the trainer_spec (and normalizer_spec) stored in the released LLaMA
`tokenizer.model`, field for field, except the fields that describe the run rather than the model
(`input`, `model_prefix`, `num_threads`) and the vocabulary size, which is a parameter (32000 for
LLaMA; small corpora need less). The normalizer is `identity` (no NFKC), with a dummy prefix and
without removing extra whitespace, so that any UTF-8 text decodes back exactly.

`model_proto(path)` parses a saved model with the `ModelProto` message descriptor that the installed
sentencepiece ships, loaded into a private descriptor pool: the generated `sentencepiece_model_pb2`
module refuses to import under the protobuf runtime that Apache Beam pins.
"""
from __future__ import annotations

import ast
import functools
import io
import os
from typing import Iterable

import sentencepiece as spm
from pipeline.runs import file_sha256  # noqa: F401  (part of this module's interface)

# The released LLaMA tokenizer.model's trainer_spec, minus input/model_prefix/num_threads.
LLAMA_TRAINER_SPEC: dict = {
    "model_type": "BPE",
    "vocab_size": 32000,
    "self_test_sample_size": 0,
    "input_format": "text",
    "character_coverage": 0.99995,
    "input_sentence_size": 200000000,
    "seed_sentencepiece_size": 1000000,
    "shrinking_factor": 0.75,
    "num_sub_iterations": 2,
    "max_sentence_length": 4192,
    "shuffle_input_sentence": True,
    "max_sentencepiece_length": 16,
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "treat_whitespace_as_suffix": False,
    "split_digits": True,
    "allow_whitespace_only_pieces": True,
    "vocabulary_output_piece_score": True,
    "hard_vocab_limit": True,
    "use_all_vocab": False,
    "byte_fallback": True,
    "required_chars": "",
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "unk_piece": "<unk>",
    "bos_piece": "<s>",
    "eos_piece": "</s>",
    "pad_piece": "<pad>",
    "unk_surface": " \u2047 ",
    "train_extremely_large_corpus": False,
}

# The released model's normalizer_spec.
LLAMA_NORMALIZER_SPEC: dict = {
    "name": "identity",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
    "normalization_rule_tsv": "",
}

BYTE_PIECES = 256  # <0x00>..<0xFF>, right after <unk>, <s>, </s>


def trainer_kwargs(vocab_size: int = 32000, num_threads: int | None = None) -> dict:
    """Keyword arguments for SentencePieceTrainer.train: the LLaMA spec with this vocabulary size."""
    kwargs = dict(LLAMA_TRAINER_SPEC)
    kwargs["vocab_size"] = int(vocab_size)
    kwargs["normalization_rule_name"] = LLAMA_NORMALIZER_SPEC["name"]
    kwargs["add_dummy_prefix"] = LLAMA_NORMALIZER_SPEC["add_dummy_prefix"]
    kwargs["remove_extra_whitespaces"] = LLAMA_NORMALIZER_SPEC["remove_extra_whitespaces"]
    kwargs["num_threads"] = int(num_threads or os.cpu_count() or 1)
    return kwargs


def train(sentences_file: str, model_prefix: str, vocab_size: int = 32000, num_threads: int | None = None,
          log: io.TextIOBase | None = None) -> str:
    """Train on a text file of one sentence per line; writes MODEL_PREFIX.model/.vocab, returns the .model path."""
    kwargs = trainer_kwargs(vocab_size, num_threads)
    kwargs["input"] = sentences_file
    kwargs["model_prefix"] = model_prefix
    if vocab_size < BYTE_PIECES + 3 + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small: byte fallback alone takes {BYTE_PIECES + 3} ids")
    spm.SentencePieceTrainer.train(logstream=log if log is not None else open(os.devnull, "w"), **kwargs)
    return model_prefix + ".model"


def sentences(text: str) -> Iterable[str]:
    """The training sentences of a document: its non-empty lines (SentencePiece trains on lines)."""
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line:
            yield line


@functools.lru_cache(maxsize=1)
def _model_proto_class():
    from google.protobuf import descriptor_pool, message_factory

    path = os.path.join(os.path.dirname(spm.__file__), "sentencepiece_model_pb2.py")
    serialized = None
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            serialized = node.args[0].value
    if serialized is None:
        raise RuntimeError(f"no serialized descriptor in {path}")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(serialized)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sentencepiece.ModelProto"))


def model_proto(path_or_bytes: str | bytes):
    """The saved model as a `sentencepiece.ModelProto` message (pieces, trainer_spec, normalizer_spec)."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    message = _model_proto_class()()
    message.ParseFromString(data)
    return message


def load(path: str) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=path)
