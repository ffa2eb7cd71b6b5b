"""`corpusmill train-lm`: SentencePiece + KenLM 5-gram on Wikipedia text, into the default LM folder
(the work is `pipeline.lm_train.train_lm`'s: one process, as lmplz is one program, as in CCNet).
"""
from __future__ import annotations

import argparse
import os

from pipeline.accounting import JobStats, StageStats
from pipeline.job import run_job
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
    settings = {"language": args.language, "vocab_size": args.vocab_size, "order": args.order, "max_documents": args.max_documents}

    def body(work):
        counts: dict = {}
        card = train_lm(inputs, args.output, args.language, args.vocab_size, args.order, max_documents=args.max_documents,
                        counts=counts, work=work)
        print(f"trained {args.language} LM on {card['documents']} documents, {card['kenlm']['tokens']} pieces -> {args.output}")
        stage = StageStats("normalize", docs_in=counts.get("read", 0), docs_out=card["documents"])
        stage.drop("empty_after_normalization", counts.get("empty_after_normalization", 0))
        files = [f"{args.language}.sp.model", f"{args.language}.sp.vocab", f"{args.language}.arpa.bin", f"{args.language}.lm.json"]
        return JobStats("train-lm", [stage], {"language": args.language}), files, []

    # One LM folder holds every language's models: each language's run keeps its own stats file.
    if run_job("train-lm", inputs, args.output, settings, body, force=args.force, stats_file=f"stats-{args.language}.json") is None:
        print(f"{args.language} LM up to date in {args.output} (same inputs and settings; --force retrains)")
    return 0
