"""Throughput of the six `corpusmill source` jobs over the shared miniature corpus.

For each source: documents/s and MB/s (input bytes as stored, and text characters read) of
  - the in-process executor (`pipeline.plan.run_local` via `pipeline.job.run_plan`: one process = one core), and
  - the Beam job on the DirectRunner with N workers (multi_processing), per core = rate / N
    (includes Beam's start-up, a few seconds, which dominates on inputs this small).
Reads /work/shared/corpus (or $CORPUSMILL_SHARED); not a test. Usage:
    PYTHONPATH=. python bench/sources_bench.py [--sources c4,books] [--workers 2] [--no-beam] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from pipeline import sources
from pipeline.job import run_plan
from beam_jobs.cli import main as cli_main

SHARED = os.environ.get("CORPUSMILL_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus"))
INPUTS = {
    "c4": ["c4/*.json.gz"],
    "github": ["github/*.jsonl.gz"],
    "wikipedia": ["wikipedia/*.xml.bz2"],
    "books": ["books/gutenberg/*.txt", "books/near_duplicates/*.txt"],
    "arxiv": ["arxiv/*"],  # folders only: arxiv.jsonl is already-processed text, not LaTeX
    "stackexchange": ["stackexchange/*/Posts.xml"],
}


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def _args(name):
    from beam_jobs import source

    parser = argparse.ArgumentParser()
    source.add_arguments(parser)
    return parser.parse_args([name, "--input", "x", "--output", "y"])


def bench(name: str, workers: int, beam: bool) -> dict:
    module = sources.get(name)
    patterns = [os.path.join(SHARED, p) for p in INPUTS[name]]
    paths = sources.expand(module, patterns)
    nbytes = sum(_size(p) for p in paths)
    config = module.config_from_args(_args(name))
    config.check_models()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        stats = run_plan(sources.plan(name, config, out), paths, out, {}, force=True, progress=False)
    local_s = time.perf_counter() - started
    chars = stats["stages"][1]["chars_in"] if len(stats["stages"]) > 1 else 0
    row = {
        "source": name, "files": len(paths), "input_mb": nbytes / 1e6, "text_mchars": chars / 1e6,
        "read": stats["read"], "kept": stats["kept"],
        "local_s": local_s, "local_docs_per_s": stats["read"] / local_s, "local_mb_per_s": nbytes / 1e6 / local_s,
        "local_mchars_per_s": chars / 1e6 / local_s,
    }
    if beam:
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            rc = cli_main(["source", name, "--input", *patterns, "--output", out, "--force",
                           f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"])
            beam_s = time.perf_counter() - started
        assert rc == 0
        row.update({"beam_workers": workers, "beam_s": beam_s,
                    "beam_docs_per_s_per_core": stats["read"] / beam_s / workers,
                    "beam_mb_per_s_per_core": nbytes / 1e6 / beam_s / workers})
    return row


def table(rows: list[dict]) -> str:
    head = "| source | files | input MB | docs read -> kept | in-process s | docs/s/core | MB/s/core (input) | Mchars/s/core (text) | Beam s (N workers) | Beam docs/s/core | Beam MB/s/core |\n|---|---|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        beam = (f"{r['beam_s']:.1f} ({r['beam_workers']}) | {r['beam_docs_per_s_per_core']:.1f} | {r['beam_mb_per_s_per_core']:.2f}"
                if "beam_s" in r else "- | - | -")
        lines.append(f"| {r['source']} | {r['files']} | {r['input_mb']:.2f} | {r['read']} -> {r['kept']} | {r['local_s']:.2f} | "
                     f"{r['local_docs_per_s']:.1f} | {r['local_mb_per_s']:.2f} | {r['local_mchars_per_s']:.2f} | {beam} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default=",".join(sources.NAMES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-beam", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.sources.split(","):
        rows.append(bench(name, args.workers, not args.no_beam))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
