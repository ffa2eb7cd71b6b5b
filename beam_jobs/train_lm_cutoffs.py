"""`corpusmill lm-cutoffs`: per-language perplexity cut-offs (30th/60th percentiles, as CCNet) from
document shards, e.g. a `corpusmill ccnet` run kept with `--keep-buckets head,middle,tail`.

The work is `pipeline.perplexity`'s (`read_perplexities`, `compute_cutoffs`).
"""
from __future__ import annotations

import argparse
import json
import os

from pipeline.models import default_lm_dir
from pipeline.perplexity import DEFAULT_PERCENTILES, compute_cutoffs, read_perplexities
from pipeline.runs import atomic_write_bytes, expand_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", help="glob(s) of document Parquet shards")
    parser.add_argument("--output", default=os.path.join(os.fspath(default_lm_dir()), "cutoffs.json"), help="default: %(default)s")
    parser.add_argument("--percentiles", default=",".join(str(int(p)) for p in DEFAULT_PERCENTILES))


def run(args, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"unrecognized arguments: {' '.join(beam_args)}")
    percentiles = tuple(float(p) for p in args.percentiles.split(","))
    paths = expand_inputs(args.input)
    values, rows = read_perplexities(paths)
    cutoffs = compute_cutoffs(values, percentiles)
    documents = {k: len(v) for k, v in sorted(values.items())}
    # Every row read is counted: with a perplexity (per language) or without one (no LM for its
    # language, or no text after normalisation), which the cut-offs do not use.
    read = {"rows": rows, "with_perplexity": sum(documents.values()), "without_perplexity": rows - sum(documents.values())}
    doc = {"percentiles": list(percentiles), "cutoffs": cutoffs, "documents": documents, "read": read, "inputs": paths}
    atomic_write_bytes(args.output, (json.dumps(doc, indent=2) + "\n").encode())
    print(f"cut-offs for {len(cutoffs)} language(s) -> {args.output}: {json.dumps(cutoffs)}")
    print(f"  read {rows} rows: {read['with_perplexity']} with a perplexity, {read['without_perplexity']} without (not used)")
    return 0
