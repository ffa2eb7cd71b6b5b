"""`corpusmill mix`: per-source token shards -> the training stream in the target shares.

The plan (which whole documents of each source, how many epochs, in which global order) is made up
front from the `.idx` lengths alone (`tokenizer/mix.py`: seeded, whole documents, each share within
the tolerance or a clear error); Beam then writes the mixed shards in parallel, each one a pure
function of the plan, and the manifest last.

The job convention (`pipeline/job.py`): one task per mixed shard (a plan of one phase), each with
its completion marker, so a killed mix resumes; then manifest.json (docs/token-shards.md), stats.json.

A source planned for more than `--max-epochs` epochs (default 2.5, just above LLaMA's largest, 2.45
for Wikipedia) is repeated that many times in the stream: the summary says so and manifest.json
lists it under "warnings" (the statistics report shows them too).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from beam_jobs.common import beam_executor
from pipeline.accounting import StageStats
from pipeline.job import run_plan
from pipeline.plan import FilePhase, FileResult, Plan
from pipeline.runs import InputError
from pipeline.schema import SOURCES
from tokenizer import spm as spm_lib
from tokenizer.inputs import parse_shares, target_shares
from tokenizer.megatron import DTYPE_NAME, FORMAT, MANIFEST_FILE, SHARD_EXTS, read_manifest, write_manifest
from tokenizer.mix import (DEFAULT_MAX_EPOCHS, SourceDocuments, achieved_shares, check_shares, plan_mix, repeat_warnings,
                           shuffle_and_shard, write_mixed_shard)

STAGE = "mix"


def mixed_prefix(index: int) -> str:
    return f"mixed-{index:05d}"


def read_token_manifest(folder: str) -> dict:
    if not os.path.isfile(os.path.join(folder, MANIFEST_FILE)):
        raise InputError(f"{folder}: no {MANIFEST_FILE} (run corpusmill tokenize into it first)")
    return read_manifest(folder)


def source_prefixes(folder: str, manifest: dict) -> dict[str, list[str]]:
    """Source -> its shard prefixes (absolute), in the manifest's order (which fixes document numbering)."""
    out: dict[str, list[str]] = {}
    for shard in manifest["shards"]:
        name = shard.get("source")
        if name is None:
            raise InputError(f"{folder}/manifest.json: shard {shard['prefix']} names no source (is it a mixed stream?)")
        out.setdefault(name, []).append(os.path.join(folder, shard["prefix"]))
    return {s: out[s] for s in SOURCES if s in out}


class MixPhase(FilePhase):
    """One mixed shard per task (the plan's "files" are the shards of the mix plan, by index)."""

    name = "mix"

    def __init__(self, output: str, prefixes: dict[str, list[str]], shards: list, stage: StageStats):
        self.output, self.prefixes, self.shards, self.stage = output, prefixes, shards, stage
        self._by_source = None


    def stages(self):
        return [STAGE]

    def run(self, file_index, path, work, barrier):
        if self._by_source is None:
            self._by_source = {SOURCES.index(s): SourceDocuments(p) for s, p in self.prefixes.items()}
        sources, documents = self.shards[file_index]
        prefix = mixed_prefix(file_index)
        info = write_mixed_shard(os.path.join(self.output, prefix), sources, documents, self._by_source)
        # The plan's accounting is of the whole mix, not per shard: the first task reports it.
        stats = [self.stage.to_dict()] if file_index == 0 else [StageStats(STAGE).to_dict()]
        return FileResult(self.name, file_index, stats, [], {"shard": {"prefix": prefix, **info}})


def close(output: str, manifest_base: dict):
    def write(results):
        shards = sorted((r.summary["shard"] for r in results), key=lambda s: s["prefix"])
        manifest = dict(manifest_base)
        manifest["shards"] = shards
        manifest["total"] = {"documents": sum(s["documents"] for s in shards), "tokens": sum(s["tokens"] for s in shards)}
        if manifest["total"] != manifest["planned_total"]:
            raise AssertionError(f"mixed shards hold {manifest['total']}, the plan says {manifest['planned_total']}")
        keep = {s["prefix"] for s in shards}
        for name in os.listdir(output):
            stem, ext = os.path.splitext(name)
            if ext in SHARD_EXTS and stem.startswith("mixed-") and stem not in keep:
                os.remove(os.path.join(output, name))
        write_manifest(output, manifest)
        return {"sources": manifest["sources"]}, [MANIFEST_FILE] + [s["prefix"] + ext for s in shards for ext in SHARD_EXTS]

    return write


def plan(input_folder: str, shares_text: str | None, renormalize: bool, tokens: int | None, seed: int, tolerance: float,
         shard_tokens: int, tokenizer_path: str | None):
    manifest = read_token_manifest(input_folder)
    if tokenizer_path and spm_lib.file_sha256(tokenizer_path) != manifest["tokenizer"]["sha256"]:
        raise InputError(f"{input_folder}: its token shards were made with another tokenizer than {tokenizer_path}")
    prefixes = source_prefixes(input_folder, manifest)
    targets = target_shares(parse_shares(shares_text), [s for s in prefixes if manifest["sources"][s]["tokens"] > 0], renormalize)
    prefixes = {s: prefixes[s] for s in targets}
    docs = {s: SourceDocuments(p) for s, p in prefixes.items()}
    lengths = {s: d.lengths for s, d in docs.items()}
    total = int(tokens) if tokens else int(sum(int(v.sum()) for v in lengths.values()))
    plans = plan_mix(lengths, targets, total, seed)
    check_shares(plans, tolerance)
    shards = shuffle_and_shard(plans, lengths, {s: SOURCES.index(s) for s in plans}, seed, shard_tokens)
    return manifest, prefixes, targets, lengths, plans, shards, total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder of per-source token shards (from corpusmill tokenize)")
    parser.add_argument("--output", required=True, help="folder for mixed-NNNNN.{bin,idx,src}, manifest.json, stats.json")
    parser.add_argument("--tokens", type=int, default=None, help="size of the training stream in tokens (default: all tokens of the input)")
    parser.add_argument("--shares", default=None, help="target shares, e.g. commoncrawl=67,c4=15,github=4.5,... (default: LLaMA's)")
    parser.add_argument("--renormalize", action="store_true", help="spread the share of missing sources over the present ones")
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest |achieved - target| share allowed (default: 0.005 = 0.5 pp)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--shard-tokens", type=int, default=1 << 28, help="tokens per mixed shard, at most (one document may pass it) (default: %(default)s)")
    parser.add_argument("--max-epochs", type=float, default=DEFAULT_MAX_EPOCHS,
                        help="warn when a source is repeated more than this many epochs (default: %(default)s; LLaMA's largest was 2.45)")
    parser.add_argument("--tokenizer", default=None, help="check that the input was tokenized with this model")
    parser.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run of the same inputs and config")


def run(args, beam_args: list[str]) -> int:
    manifest, prefixes, targets, lengths, plans, shards, total = plan(
        args.input, args.shares, args.renormalize, args.tokens, args.seed, args.tolerance, args.shard_tokens, args.tokenizer
    )
    settings = {"tokens": total, "targets": targets, "seed": args.seed, "tolerance": args.tolerance, "shard_tokens": args.shard_tokens,
                "max_epochs": args.max_epochs}
    inputs = [p + ext for ps in prefixes.values() for p in ps for ext in (".bin", ".idx")]
    shares = achieved_shares(plans)
    stage = StageStats(STAGE)
    for name, p in plans.items():
        distinct = len(np.unique(p.documents))
        stage.docs_in += p.available_documents
        stage.docs_out += distinct
        stage.drop("not_sampled", p.available_documents - distinct)
        stage.notes["repeated_documents"] += len(p.documents) - distinct
    warnings = repeat_warnings(plans, args.max_epochs)
    base = {
        "format": FORMAT,
        "dtype": DTYPE_NAME,
        "tokenizer": manifest["tokenizer"],
        "source_names": list(SOURCES),
        "sources": {
            name: {
                "documents": int(len(p.documents)),
                "tokens": p.tokens,
                "epochs": p.epochs,
                "share": shares[name],
                "target": p.target,
                "available_documents": p.available_documents,
                "available_tokens": p.available_tokens,
            }
            for name, p in plans.items()
        },
        "requested_tokens": total,
        "seed": args.seed,
        "input": os.path.abspath(args.input),
        "planned_total": {"documents": int(sum(len(p.documents) for p in plans.values())), "tokens": int(sum(p.tokens for p in plans.values()))},
        "max_epochs": args.max_epochs,
        "warnings": warnings,
    }
    os.makedirs(args.output, exist_ok=True)
    started = time.time()
    phase = MixPhase(args.output, prefixes, shards, stage)
    stats = run_plan(Plan("mix", [phase]), [f"{args.output}#shard-{i}" for i in range(len(shards))], args.output, settings,
                     force=args.force, executor=beam_executor(beam_args), close=close(args.output, base), fingerprint_inputs=inputs)
    if stats is None:
        print(f"{args.output}: up to date (same inputs and config); --force reruns")
        for w in read_manifest(args.output).get("warnings", []):
            print(f"  warning: {w['message']}")
        return 0
    out = read_manifest(args.output)
    print(f"mix: {out['total']['tokens']} tokens, {out['total']['documents']} documents in {len(out['shards'])} shard(s) -> {args.output} ({time.time() - started:.1f} s)")
    for name, s in out["sources"].items():
        print(f"  {name:<14} {s['tokens']:>12} tokens {s['share']:7.2%} (target {s['target']:.2%}), epochs {s['epochs']:.2f}")
    for w in out["warnings"]:
        print(f"  warning: {w['message']}")
    return 0
