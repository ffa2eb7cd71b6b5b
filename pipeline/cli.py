"""The `corpusmill` command. Each subcommand lives in its own module, imported only when it runs,
so that `corpusmill --help` stays fast and `corpusmill stats` does not import torch.

A subcommand module defines `add_arguments(parser)` and `run(args, beam_args) -> int`. Arguments the
subcommand does not know are passed to Beam as pipeline options (`--runner`, `--direct_num_workers`,
`--flink_master`, `--project`, ...), so every job runs unchanged on any Beam runner.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). Keep in pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "train-lm": ("beam_jobs.train_lm", "train the SentencePiece + KenLM 5-gram model used for perplexity (CCNet)"),
    "lm-cutoffs": ("beam_jobs.train_lm_cutoffs", "compute per-language perplexity bucket cut-offs from document shards"),
    "train-quality": ("beam_jobs.train_quality", "train the Wikipedia-vs-web linear quality classifier (fastText)"),
    "eval-quality": ("beam_jobs.eval_quality", "score labelled positives/negatives with a quality classifier: ROC AUC, precision, recall"),
    "ccnet": ("beam_jobs.ccnet", "CommonCrawl WARC/WET -> extracted, deduplicated, language-identified, perplexity-bucketed documents"),
    "source": ("beam_jobs.source", "one of the other LLaMA sources (c4, github, wikipedia, books, arxiv, stackexchange) -> documents"),
    "train-tokenizer": ("beam_jobs.tokenizer", "sample the curated sources in the mix's proportions and train the LLaMA-spec SentencePiece BPE tokenizer"),
    "tokenize": ("beam_jobs.tokenize", "documents -> token shards (Megatron .bin/.idx) per source, with manifest.json"),
    "mix": ("beam_jobs.mix", "token shards -> the shuffled training stream in the target shares (67/15/4.5/4.5/4.5/2.5/2 %)"),
    "stats": ("reporting.command", "statistics of any job output or run folder: funnel, sources, shards, languages, perplexity, quality, mix (--json, --html DIR)"),
    "train": ("model.train", "train the bundled LLaMA model on mixed token shards"),
    "export-hf": ("model.export_hf", "export a training checkpoint to the Hugging Face Llama format (config + safetensors)"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corpusmill",
        description="LLaMA-style pretraining-data curation on Apache Beam.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items())
        + "\n\nRun `corpusmill COMMAND --help` for a command's options.",
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    return parser


class _ImportNoise(logging.Filter):
    # Beam's import of its BigQuery client warns that apitools is missing; nothing here uses BigQuery.
    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().addFilter(_ImportNoise())
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}")
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"corpusmill {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args, beam_args = parser.parse_known_args(rest)
    unknown = [a for a in beam_args if a.startswith("--") is False and not _follows_option(beam_args, a)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(module.run(args, beam_args) or 0)
    except (FileNotFoundError, ValueError) as err:
        # Bad input or a missing model: one clear line, no traceback.
        print(f"corpusmill {name}: error: {err}", file=sys.stderr)
        return 2


def _follows_option(args: list[str], value: str) -> bool:
    i = args.index(value)
    return i > 0 and args[i - 1].startswith("--") and "=" not in args[i - 1]


if __name__ == "__main__":
    sys.exit(main())
