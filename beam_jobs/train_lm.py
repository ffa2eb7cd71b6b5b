"""`corpusmill train-lm`: SentencePiece + KenLM 5-gram on Wikipedia text, into the default LM folder
(the work is `pipeline.lm_train.train_lm`'s: one process, as lmplz is one program, as in CCNet).
"""
from __future__ import annotations

import argparse
import os

from pipeline.lm_train import MAX_DOCUMENTS, train_lm
from pipeline.models import default_lm_dir
from pipeline.runs import expand_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", help="glob(s) of Wikipedia documents: JSON lines with 'text' (.gz ok), .txt (one a line) or Parquet shards")
    parser.add_argument("--output", default=os.fspath(default_lm_dir()), help="LM folder (default: %(default)s)")
    parser.add_argument("--language", default="en")
    parser.add_argument("--vocab-size", type=int, default=65536, help="SentencePiece vocabulary (CCNet: 65536; small corpora need less)")
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--max-documents", type=int, default=MAX_DOCUMENTS, help="train on the first N documents (CCNet: %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if the model exists")


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"unrecognized arguments: {' '.join(beam_args)}")
    inputs = expand_inputs(args.input)
    target = os.path.join(args.output, f"{args.language}.arpa.bin")
    if os.path.isfile(target) and not args.force:
        print(f"LM exists: {target} (use --force to retrain)")
        return 0
    card = train_lm(inputs, args.output, args.language, args.vocab_size, args.order, max_documents=args.max_documents)
    print(f"trained {args.language} LM on {card['documents']} documents, {card['kenlm']['tokens']} pieces -> {args.output}")
    return 0
