"""The whole run at a glance: the first thing `corpusmill stats RUN` shows.

Built from the per-job reports (`reporting/shard_stats.folder_report`), already in the order of
`shard_stats.job_rank` (web pipeline, mix, sources, ...):

- `funnel`: one row per job that has a stats.json: documents read, kept, dropped, the top reasons;
- `sources`: one row per source: documents its job kept, its tokens in the token shards, its tokens
  in the mix, the achieved share against the target, and the epochs (with the mix's repeat warning);
- `training`: the trainer's loss and validation curves and summary, when the run has a train folder;
- `repeats`: the mix's warnings for sources repeated past `corpusmill mix --max-epochs`.
"""
from __future__ import annotations

from pipeline.schema import SOURCES

TOP_DROP_REASONS = 3


def funnel_row(folder: dict) -> dict | None:
    f = folder.get("funnel")
    if not f:
        return None
    dropped = f.get("dropped") or {}
    ranked = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
    read, kept = f.get("read") or 0, f.get("kept") or 0
    return {
        "job": folder["job"], "name": folder["name"], "read": read, "kept": kept, "dropped": sum(dropped.values()),
        "kept_share": kept / read if read else None, "top_dropped": [[r, n] for r, n in ranked[:TOP_DROP_REASONS]],
        "other_reasons": max(0, len(ranked) - TOP_DROP_REASONS),
    }  # fmt: skip


def source_rows(folders: list[dict]) -> list[dict]:
    documents = [f for f in folders if f["kind"] == "documents"]
    tokenized = [f for f in folders if f["kind"] == "tokens" and not f.get("is_mix")]
    mixes = [f for f in folders if f["kind"] == "tokens" and f.get("is_mix")]
    mix_rows = {r["source"]: r for r in (mixes[0]["mix"]["sources"] if mixes and mixes[0].get("mix") else [])}
    repeated = {w["source"] for f in mixes[:1] for w in f.get("repeats", [])}
    names = set(mix_rows)
    for f in documents + tokenized:
        names |= {s for s in f["sources"] if not s.startswith("(")}
    rows = []
    for s in sorted(names, key=lambda s: (SOURCES.index(s) if s in SOURCES else len(SOURCES), s)):
        doc_job = next((f for f in documents if s in f["sources"]), None)  # folders come most important first
        tok = next((f for f in tokenized if s in f["sources"]), None)
        m = mix_rows.get(s) or {}
        rows.append({
            "source": s,
            "job": doc_job["name"] if doc_job else None,
            "docs": doc_job["sources"][s]["docs"] if doc_job else None,
            "tokens": tok["sources"][s]["tokens"] if tok else None,
            "mix_tokens": m.get("tokens"), "achieved": m.get("achieved"), "target": m.get("target"),
            "epochs": m.get("epochs"), "repeated": s in repeated,
        })  # fmt: skip
    return rows


def run_overview(folders: list[dict]) -> dict:
    mixes = [f for f in folders if f["kind"] == "tokens" and f.get("is_mix")]
    trains = [f for f in folders if f["kind"] == "train"]
    return {
        "funnel": [row for row in map(funnel_row, folders) if row is not None],
        "sources": source_rows(folders),
        "mix": {"job": mixes[0]["name"], "total_tokens": mixes[0]["mix"]["total_tokens"]} if mixes and mixes[0].get("mix") else None,
        "repeats": [w for f in mixes[:1] for w in f.get("repeats", [])],
        "training": [{"name": f["name"], **f["training"]} for f in trains],
    }  # fmt: skip
