"""`corpusmill lm-cutoffs`: per-language perplexity cut-offs (30th/60th percentiles, as CCNet) from
document shards, e.g. a `corpusmill ccnet` run kept with `--keep-buckets head,middle,tail`.

Reads only the `language` and `perplexity` columns, one row group at a time.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pyarrow.parquet as pq

from pipeline.models import default_lm_dir
from pipeline.perplexity import DEFAULT_PERCENTILES, compute_cutoffs
from pipeline.runs import atomic_write_bytes, expand_inputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, nargs="+", help="glob(s) of document Parquet shards")
    parser.add_argument("--output", default=os.path.join(os.fspath(default_lm_dir()), "cutoffs.json"), help="default: %(default)s")
    parser.add_argument("--percentiles", default=",".join(str(int(p)) for p in DEFAULT_PERCENTILES))


def run(args, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"unrecognized arguments: {' '.join(beam_args)}")
    percentiles = tuple(float(p) for p in args.percentiles.split(","))
    values: dict[str, list[np.ndarray]] = {}
    paths = expand_inputs(args.input)
    for path in paths:
        reader = pq.ParquetFile(path)
        for i in range(reader.num_row_groups):
            rg = reader.read_row_group(i, columns=["language", "perplexity"])
            langs = np.array(rg.column("language").to_pylist(), dtype=object)
            ppl = rg.column("perplexity").to_numpy(zero_copy_only=False).astype(np.float64)
            ok = ~np.isnan(ppl)
            for lang in set(langs[ok]):
                values.setdefault(lang, []).append(ppl[ok & (langs == lang)])
    cutoffs = compute_cutoffs({k: np.concatenate(v) for k, v in values.items()}, percentiles)
    doc = {"percentiles": list(percentiles), "cutoffs": cutoffs, "documents": {k: int(sum(len(a) for a in v)) for k, v in sorted(values.items())}, "inputs": paths}
    atomic_write_bytes(args.output, (json.dumps(doc, indent=2) + "\n").encode())
    print(f"cut-offs for {len(cutoffs)} language(s) -> {args.output}: {json.dumps(cutoffs)}")
    return 0
