"""The `corpusmill` command. Each subcommand lives in its own module, imported only when it runs,
so that `corpusmill --help` stays fast and `corpusmill stats` does not import torch.

A subcommand module defines `add_arguments(parser)` and `run(args, beam_args) -> int`. Arguments the
subcommand does not know are passed to Beam as pipeline options (`--runner`, `--direct_num_workers`,
`--flink_master`, `--project`, ...), so every job runs unchanged on any Beam runner.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import re
import sys
import threading

# name -> (module, one-line help). Keep in pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "train-lm": ("beam_jobs.train_lm", "train the SentencePiece + KenLM 5-gram model used for perplexity (CCNet)"),
    "lm-cutoffs": ("beam_jobs.train_lm_cutoffs", "compute per-language perplexity bucket cut-offs from document shards"),
    "wiki-refs": ("beam_jobs.wiki_refs", "the URLs Wikipedia XML dumps cite (RedPajama's <ref> rule): the quality classifier's positives"),
    "train-quality": ("beam_jobs.train_quality", "train the Wikipedia-vs-web linear quality classifier (fastText)"),
    "eval-quality": ("beam_jobs.eval_quality", "score labelled positives/negatives with a quality classifier: ROC AUC, precision, recall"),
    "ccnet": ("beam_jobs.ccnet", "CommonCrawl WARC/WET -> extracted, deduplicated, language-identified, perplexity-bucketed documents"),
    "source": ("beam_jobs.source", "one of the other LLaMA sources (c4, github, wikipedia, books, arxiv, stackexchange) -> documents"),
    "train-tokenizer": ("beam_jobs.train_tokenizer", "sample the curated sources in the mix's proportions and train the LLaMA-spec SentencePiece BPE tokenizer"),
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


# What Beam and its worker processes print in a normal run that tells a user nothing: the BigQuery
# client's missing apitools, each worker's "Logging handler created", Beam's worker log lines.
_NOISE = re.compile(r"apitools not found|Logging handler created|^(ERROR|WARNING|INFO|DEBUG):(root|__main__|apache_beam)[:.]"
                    r"|^Traceback \(most recent call last\)")
# The lines that continue a noise line: a traceback and its indented frames.
_CONTINUATION = re.compile(r"^(\s|Traceback|During handling|The above exception|$)|^[\w.]+(Error|Exception|Exit|Interrupt)\b")


class _QuietStderr:
    """Filters the noise out of standard error, the worker processes' included (they inherit fd 2):
    a pipe on fd 2 and a thread that passes on every other line."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.out = os.dup(self.saved)  # the thread's own copy: it outlives `saved`
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self.thread.start()
        return self

    def _pump(self, fd):
        skipping = False
        with os.fdopen(fd, "rb") as pipe, os.fdopen(self.out, "wb", buffering=0) as out:
            for line in pipe:
                text = line.decode("utf-8", "replace")
                if _NOISE.search(text):
                    skipping = True
                elif not (skipping and _CONTINUATION.search(text)):
                    skipping = False
                    out.write(line)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last writer here: the thread sees the end
        os.close(self.saved)
        self.thread.join(timeout=5)


def _import_without_collecting(module: str):
    """Import a command's module (Beam, pyarrow, the job: some 180 thousand objects, none of them
    garbage) with no cyclic garbage collection meanwhile, which took 0.07-0.1 s of every run's
    start here; then freeze what is there, so that no later collection walks it again, in this
    process or in a worker process forked from it (`gc.freeze`'s documented use)."""
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        gc.enable()


def user_error(err: BaseException) -> str | None:
    """The one line to show for an error a user can act on (bad input, a missing model or tool, a bad
    option), also when it arrives wrapped in a Beam worker's traceback; None for a bug."""
    from pipeline.models import ModelError
    from pipeline.runs import InputError

    if isinstance(err, (InputError, ModelError, FileNotFoundError, ValueError)) and "Traceback" not in str(err):
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = str(err)
    for name in ("InputError", "ModelError", "FileNotFoundError", "TaskError"):
        found = re.findall(rf"(?:^|\.|\s){name}: (.+)", text)
        if found:
            return re.sub(r" \[while running '[^']*'\]$", "", found[-1].strip())
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}")
    os.environ.setdefault("CORPUSMILL_TTY", "1" if sys.stderr.isatty() else "0")
    if not verbose:
        os.environ["CORPUSMILL_QUIET"] = "1"  # Beam's worker processes log only what is fatal
    with contextlib.nullcontext() if verbose else _QuietStderr():
        if not verbose:
            logging.getLogger().setLevel(logging.ERROR)
        module = _import_without_collecting(COMMANDS[name][0])
        from pipeline.job import exit_without_collecting

        exit_without_collecting()
        parser = argparse.ArgumentParser(prog=f"corpusmill {name}", description=COMMANDS[name][1])
        parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's and the libraries' logs, and tracebacks")
        module.add_arguments(parser)
        args, beam_args = parser.parse_known_args(rest)
        unknown = [a for a in beam_args if a.startswith("--") is False and not _follows_option(beam_args, a)]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        try:
            return int(module.run(args, beam_args) or 0)
        except KeyboardInterrupt:
            print(f"corpusmill {name}: interrupted; rerun the same command to resume", file=sys.stderr)
            return 130
        except Exception as err:  # noqa: BLE001 - the one place that turns errors into what a person reads
            if verbose:
                raise
            message = user_error(err)
            if message is not None:
                print(f"corpusmill {name}: error: {message}", file=sys.stderr)
                return 2
            first = (str(err).strip().splitlines() or [""])[0][:300]
            print(f"corpusmill {name}: failed: {type(err).__name__}: {first}\n"
                  f"  rerun with --verbose for the traceback; a rerun of the same command resumes the finished work", file=sys.stderr)
            return 1


def _follows_option(args: list[str], value: str) -> bool:
    i = args.index(value)
    return i > 0 and args[i - 1].startswith("--") and "=" not in args[i - 1]


if __name__ == "__main__":
    sys.exit(main())
