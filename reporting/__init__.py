"""Reporting: what a run made, read back from its files (`corpusmill stats`).

- `shard_stats`: one pass per shard into mergeable summaries, and the report dict;
- `training`: the trainer's curves from its metrics.jsonl;
- `overview`: the whole run at a glance;
- `render`: the report as rich tables, JSON, or a self-contained HTML page with PNG plots;
- `command`: the `corpusmill stats` command (its Beam job for large outputs is `beam_jobs/stats.py`).
"""
