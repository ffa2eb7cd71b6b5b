"""Where the curated documents of each source are, and the mix's target shares.

Input is either a run folder whose sub-folders are finished source jobs (`runs/demo/ccnet/`,
`runs/demo/c4/`, ...: `part-*.parquet` + `stats.json`, the `source` column naming the source), or
explicit `NAME=GLOB` pairs. Two folders holding the same source is an error (which one is curated?):
name them explicitly.
"""
from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq

from pipeline.runs import InputError, expand_inputs
from pipeline.schema import SOURCES

# The LLaMA paper's Table 1 sampling proportions.
LLAMA_SHARES: dict[str, float] = {
    "commoncrawl": 0.67,
    "c4": 0.15,
    "github": 0.045,
    "wikipedia": 0.045,
    "books": 0.045,
    "arxiv": 0.025,
    "stackexchange": 0.02,
}


def parse_shares(text: str | None) -> dict[str, float]:
    """`commoncrawl=67,c4=15,...` (percent or fractions) -> fractions summing to 1."""
    if not text:
        return dict(LLAMA_SHARES)
    shares = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in SOURCES:
            raise ValueError(f"--shares: unknown source {name!r} (known: {', '.join(SOURCES)})")
        shares[name] = float(value)
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("--shares: the shares sum to 0")
    return {k: v / total for k, v in shares.items()}


def target_shares(shares: dict[str, float], available: list[str], renormalize: bool) -> dict[str, float]:
    """The shares of the available sources; a missing source is an error unless `renormalize`."""
    missing = [s for s, v in shares.items() if v > 0 and s not in available]
    if missing and not renormalize:
        raise ValueError(
            f"missing source(s) {', '.join(missing)} (have: {', '.join(available) or 'none'}); "
            "pass --renormalize to spread their share over the others"
        )
    present = {s: v for s, v in shares.items() if s in available and v > 0}
    if not present:
        raise ValueError(f"none of the mix's sources is present (have: {', '.join(available) or 'none'})")
    total = sum(present.values())
    return {s: present[s] / total for s in SOURCES if s in present}


def parse_source_flags(items: list[str]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or name not in SOURCES:
            raise ValueError(f"--source {item!r}: expected NAME=GLOB with NAME one of {', '.join(SOURCES)}")
        sources.setdefault(name, []).extend(expand_inputs(pattern))
    return {s: sorted(set(sources[s])) for s in SOURCES if s in sources}


def discover_sources(run_dir: str) -> dict[str, list[str]]:
    """Source -> its document shards, from the finished job folders directly under `run_dir`."""
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: no such run folder")
    found: dict[str, tuple[str, list[str]]] = {}
    for name in sorted(os.listdir(run_dir)):
        folder = os.path.join(run_dir, name)
        parts = sorted(glob.glob(os.path.join(folder, "part-*.parquet")))
        if not parts:
            continue
        if not os.path.isfile(os.path.join(folder, "stats.json")):
            raise InputError(f"{folder}: no stats.json, the job that writes it has not finished")
        names = set()
        for path in parts:
            column = pq.read_table(path, columns=["source"]).column("source")
            names.update(v for v in column.unique().to_pylist() if v is not None)
        if len(names) > 1:
            raise InputError(f"{folder}: documents of several sources ({', '.join(sorted(names))}); use --source NAME=GLOB")
        if not names:
            continue  # a job that kept no documents
        source = names.pop()
        if source in found:
            raise InputError(
                f"source {source!r} is in both {found[source][0]} and {folder}; name the curated one with --source {source}=GLOB"
            )
        found[source] = (folder, parts)
    return {s: found[s][1] for s in SOURCES if s in found}


def resolve_inputs(run_dir: str | None, source_flags: list[str] | None) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    if run_dir:
        sources.update(discover_sources(run_dir))
    if source_flags:
        sources.update(parse_source_flags(source_flags))  # explicit flags win over discovery
    if not sources:
        raise InputError(f"no document shards found (input {run_dir!r}, sources {source_flags or []})")
    return {s: sources[s] for s in SOURCES if s in sources}
